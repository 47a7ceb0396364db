/**
 * Errors caused by the user's input (bad files, bad flags, bad requests).
 * The CLI prints their message without a stack trace and exits non-zero.
 */
export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'UserError';
    this.exitCode = exitCode;
  }
}

/** Raised when a checkpoint or data file is malformed. The message names the file and what was expected. */
export class FormatError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'FormatError';
  }
}
