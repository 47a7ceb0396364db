import type { Command } from 'commander';

/** Registers `rwkv7 info`. (Not implemented yet.) */
export function register(_program: Command): void {}
