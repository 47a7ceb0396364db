import type { Command } from 'commander';

/** Registers `rwkv7 serve`. (Not implemented yet.) */
export function register(_program: Command): void {}
