// The sampler's random numbers (src/runtime/sampler.ts): a seeded generator, so that a seed repeats a run.

/**
 * xoshiro128** (Blackman & Vigna), a small fast 32-bit PRNG, seeded through splitmix32 so that any number
 * (including 0 and non-integers) gives a well-mixed non-zero state.
 */
export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    // Fold the seed (possibly larger than 32 bits or fractional) into two 32-bit words.
    let x = (Math.floor(seed) >>> 0) ^ (Math.floor(seed / 2 ** 32) >>> 0) ^ (Math.round((seed % 1) * 2 ** 31) >>> 0);
    for (let i = 0; i < 4; i++) {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s[0] === 0 && this.s[1] === 0 && this.s[2] === 0 && this.s[3] === 0) this.s[0] = 1;
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const m = Math.imul(s[1]!, 5) >>> 0;
    const result = Math.imul(((m << 7) | (m >>> 25)) >>> 0, 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    const w = s[3]!;
    s[3] = ((w << 11) | (w >>> 21)) >>> 0;
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

/** A random seed (used when none is given). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}
