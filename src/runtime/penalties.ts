// The sampler's repetition penalties (src/runtime/sampler.ts, steps 2 and 4 of its header): which tokens count,
// and the decayed occurrence counts.

/** True when the package would give this decoded token weight 0 (`ttt in ' \t0123456789'`, a substring test). */
export function isPenaltyFreeText(text: string): boolean {
  return ' \t0123456789'.includes(text);
}

/**
 * Repetition-penalty bookkeeping: decayed occurrence counts of the generated tokens.
 * Kept separate from the sampler so it can be tested (and reset) on its own. The counts live in typed arrays, in the
 * order the tokens were first recorded (a step costs a pass over the distinct tokens so far, not a Map update each).
 */
export class PenaltyTracker {
  private ids = new Int32Array(64);
  private cnt = new Float64Array(64);
  private size = 0;
  /** token id → its index in ids/cnt */
  private readonly slot = new Map<number, number>();

  constructor(
    private readonly presence: number,
    private readonly frequency: number,
    private readonly decay: number,
  ) {}

  /** token id → decayed count (a snapshot); a token present with count 0 still gets the presence penalty. */
  get counts(): ReadonlyMap<number, number> {
    const m = new Map<number, number>();
    for (let k = 0; k < this.size; k++) m.set(this.ids[k]!, this.cnt[k]!);
    return m;
  }

  /** logits[t] -= presence + count[t] * frequency for every recorded token (in place). */
  apply(logits: Float32Array | Float64Array): void {
    const { ids, cnt, presence, frequency } = this;
    const V = logits.length;
    for (let k = 0; k < this.size; k++) {
      const t = ids[k]!;
      if (t < V) logits[t] = logits[t]! - (presence + cnt[k]! * frequency);
    }
  }

  /** After sampling `token`: decay every count, then add `weight` (0 or 1) to the token's count. */
  record(token: number, weight: number): void {
    const { cnt, decay } = this;
    for (let k = 0; k < this.size; k++) cnt[k] = cnt[k]! * decay;
    const k = this.slot.get(token);
    if (k !== undefined) {
      cnt[k] = cnt[k]! + weight;
      return;
    }
    if (this.size === this.ids.length) {
      const ids = new Int32Array(2 * this.size);
      const c = new Float64Array(2 * this.size);
      ids.set(this.ids);
      c.set(this.cnt);
      this.ids = ids;
      this.cnt = c;
    }
    this.slot.set(token, this.size);
    this.ids[this.size] = token;
    this.cnt[this.size] = 0 + weight;
    this.size++;
  }

  clear(): void {
    this.size = 0;
    this.slot.clear();
  }
}
