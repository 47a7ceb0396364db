/**
 * The two byte-level lexers of JSON that carry state inside one value: string content (escapes and UTF-8
 * validation) and numbers. Both are small DFAs over integer states so that the automaton stays cheap per byte.
 */

// ---- string content (after the opening quote) ----

export const S_NORMAL = 0;
const S_ESCAPE = 1; // after a backslash
const S_U0 = 2; // after \u
const S_U1 = 3; // after \u and one hex digit (not d/D)
const S_U1D = 4; // after \ud / \uD: the next digit must be 0-7 (no surrogate escapes)
const S_U2 = 5;
const S_U3 = 6;
const S_CONT1 = 7; // UTF-8: one continuation byte (80-BF) left
const S_CONT2 = 8;
const S_CONT3 = 9;
const S_E0 = 10; // after E0: A0-BF, then one more (no overlong forms)
const S_ED = 11; // after ED: 80-9F, then one more (no surrogates)
const S_F0 = 12; // after F0: 90-BF, then two more
const S_F4 = 13; // after F4: 80-8F, then two more (nothing above U+10FFFF)

/** Returned by stringStep for the closing quote. */
export const STRING_CLOSE = -2;
/** Or-ed into stringStep's result when the byte starts a new character (for minLength/maxLength). */
export const STRING_NEW_CHAR = 0x100;

function isHex(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);
}

/**
 * One byte of JSON string content in lexer state `s`: the new state (| STRING_NEW_CHAR when a character
 * starts), STRING_CLOSE for the closing quote, or -1 when the byte is not allowed. Escapes are refused when
 * `escapes` is false. Lone surrogate escapes (\uD800-\uDFFF) are refused, so every character is one code point.
 */
export function stringStep(s: number, b: number, escapes: boolean): number {
  switch (s) {
    case S_NORMAL:
      if (b === 0x22) return STRING_CLOSE;
      if (b === 0x5c) return escapes ? S_ESCAPE | STRING_NEW_CHAR : -1;
      if (b < 0x20) return -1; // control characters must be escaped
      if (b < 0x80) return S_NORMAL | STRING_NEW_CHAR;
      if (b >= 0xc2 && b <= 0xdf) return S_CONT1 | STRING_NEW_CHAR;
      if (b === 0xe0) return S_E0 | STRING_NEW_CHAR;
      if (b === 0xed) return S_ED | STRING_NEW_CHAR;
      if (b >= 0xe1 && b <= 0xef) return S_CONT2 | STRING_NEW_CHAR;
      if (b === 0xf0) return S_F0 | STRING_NEW_CHAR;
      if (b >= 0xf1 && b <= 0xf3) return S_CONT3 | STRING_NEW_CHAR;
      if (b === 0xf4) return S_F4 | STRING_NEW_CHAR;
      return -1;
    case S_ESCAPE:
      switch (b) {
        case 0x22: case 0x5c: case 0x2f: case 0x62: case 0x66: case 0x6e: case 0x72: case 0x74:
          return S_NORMAL;
        case 0x75:
          return S_U0;
        default:
          return -1;
      }
    case S_U0:
      if (b === 0x64 || b === 0x44) return S_U1D;
      return isHex(b) ? S_U1 : -1;
    case S_U1D:
      return b >= 0x30 && b <= 0x37 ? S_U2 : -1;
    case S_U1:
      return isHex(b) ? S_U2 : -1;
    case S_U2:
      return isHex(b) ? S_U3 : -1;
    case S_U3:
      return isHex(b) ? S_NORMAL : -1;
    case S_CONT1:
      return b >= 0x80 && b <= 0xbf ? S_NORMAL : -1;
    case S_CONT2:
      return b >= 0x80 && b <= 0xbf ? S_CONT1 : -1;
    case S_CONT3:
      return b >= 0x80 && b <= 0xbf ? S_CONT2 : -1;
    case S_E0:
      return b >= 0xa0 && b <= 0xbf ? S_CONT1 : -1;
    case S_ED:
      return b >= 0x80 && b <= 0x9f ? S_CONT1 : -1;
    case S_F0:
      return b >= 0x90 && b <= 0xbf ? S_CONT2 : -1;
    case S_F4:
      return b >= 0x80 && b <= 0x8f ? S_CONT2 : -1;
    default:
      return -1;
  }
}

/** Fewest bytes that finish the character in progress in state s (0 in S_NORMAL). */
export function stringPending(s: number): number {
  switch (s) {
    case S_NORMAL: return 0;
    case S_ESCAPE: return 1;
    case S_U0: return 4;
    case S_U1: case S_U1D: return 3;
    case S_U2: return 2;
    case S_U3: return 1;
    case S_CONT1: return 1;
    case S_CONT2: case S_E0: case S_ED: return 2;
    default: return 3; // S_CONT3, S_F0, S_F4
  }
}

// ---- numbers (the JSON grammar: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?) ----

const N_MINUS = 0; // after '-'
const N_ZERO = 1; // integer part is "0" (accepting)
const N_INT = 2; // in the integer part (accepting)
const N_DOT = 3; // after '.'
const N_FRAC = 4; // in the fraction (accepting)
const N_EXP_MARK = 5; // after e/E
const N_EXP_SIGN = 6; // after the exponent's sign
const N_EXP = 7; // in the exponent (accepting)

/**
 * Digit limits, so that a number cannot grow forever and stays a finite double: at most 15 digits in the
 * integer part (a safe integer), 15 in the fraction, 2 in the exponent.
 */
export const MAX_INT_DIGITS = 15;
export const MAX_FRAC_DIGITS = 15;
export const MAX_EXP_DIGITS = 2;

/** A number lexer state: the DFA state and the digits in the current part (packed as state | digits << 4). */
export type NumberState = number;

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

/** The first byte of a number: its state, or -1. */
export function numberStart(b: number): NumberState {
  if (b === 0x2d) return N_MINUS;
  if (b === 0x30) return N_ZERO;
  if (b >= 0x31 && b <= 0x39) return N_INT | (1 << 4);
  return -1;
}

/** The next state of a number after byte b, or -1 when b cannot continue it (integer: no fraction or exponent). */
export function numberStep(st: NumberState, b: number, integer: boolean): NumberState {
  const s = st & 15;
  const digits = st >> 4;
  switch (s) {
    case N_MINUS:
      if (b === 0x30) return N_ZERO;
      return b >= 0x31 && b <= 0x39 ? N_INT | (1 << 4) : -1;
    case N_ZERO:
    case N_INT:
      if (s === N_INT && isDigit(b)) return digits < MAX_INT_DIGITS ? N_INT | ((digits + 1) << 4) : -1;
      if (integer) return -1;
      if (b === 0x2e) return N_DOT;
      return b === 0x65 || b === 0x45 ? N_EXP_MARK : -1;
    case N_DOT:
      return isDigit(b) ? N_FRAC | (1 << 4) : -1;
    case N_FRAC:
      if (isDigit(b)) return digits < MAX_FRAC_DIGITS ? N_FRAC | ((digits + 1) << 4) : -1;
      return b === 0x65 || b === 0x45 ? N_EXP_MARK : -1;
    case N_EXP_MARK:
      if (b === 0x2b || b === 0x2d) return N_EXP_SIGN;
      return isDigit(b) ? N_EXP | (1 << 4) : -1;
    case N_EXP_SIGN:
      return isDigit(b) ? N_EXP | (1 << 4) : -1;
    case N_EXP:
      return isDigit(b) && digits < MAX_EXP_DIGITS ? N_EXP | ((digits + 1) << 4) : -1;
    default:
      return -1;
  }
}

/** Whether the number so far is a complete number. */
export function numberAccepts(st: NumberState): boolean {
  const s = st & 15;
  return s === N_ZERO || s === N_INT || s === N_FRAC || s === N_EXP;
}

/** Fewest bytes that make the number complete (0 when it already is). */
export function numberPending(st: NumberState): number {
  switch (st & 15) {
    case N_MINUS: case N_DOT: case N_EXP_SIGN: return 1;
    case N_EXP_MARK: return 1;
    default: return 0;
  }
}
