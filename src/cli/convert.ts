import type { Command } from 'commander';

/** Registers `rwkv7 convert`. (Not implemented yet.) */
export function register(_program: Command): void {}
