/**
 * Checks on a state read from a file (`loadState`), before it replaces a live one: every value must be finite. A
 * state holding NaN or an infinity poisons every later token (NaN logits: "cannot sample"), so it is refused at
 * load, naming the file and the tensor.
 */
import { FormatError } from '../errors.js';
import { describeNonFinite, findNonFinite } from '../formats/finite.js';
import type { HostState } from './state.js';

/** Throws a FormatError if any value of `host` is NaN or infinite; `file` names the state file in the message. */
export function checkStateFinite(file: string, host: HostState): void {
  const parts: Array<[string, Float32Array]> = [['state.att_x', host.attX], ['state.ffn_x', host.ffnX], ['state.wkv', host.wkv]];
  for (const [name, values] of parts) {
    const nf = findNonFinite(values);
    if (nf) throw new FormatError(`${file}: state tensor ${name} holds ${describeNonFinite(nf)}; a usable state is finite, refusing it`);
  }
}
