/**
 * Decode speed of two configurations measured side by side: both models resident in one process, decode timed in
 * alternating blocks of tokens, so both see the same host load. On a shared, noisy machine the rate of one
 * configuration moves by 20% or more between runs minutes apart (see the issue notes); a ratio of rates taken from
 * separate runs moves as much, while the ratio of alternating blocks does not drift with the host. Used by
 * `npm run bench` for the 4-bit/8-bit decode ratio.
 */
import { createBackend } from '../src/backends/index.js';
import type { ActivationMode, WeightDType } from '../src/backends/kernels.js';
import { syntheticModel } from '../src/runtime/synthetic.js';
import { median } from '../src/cli/bench.js';

export interface PairedConfig { dtype: WeightDType; activations?: ActivationMode }
export interface PairedResult {
  /** Decode tok/s of a and b over all their blocks. */
  a_tok_s: number;
  b_tok_s: number;
  /** Median over rounds of (b's rate / a's rate) within the round. */
  median_ratio: number;
  rounds: number;
}

/** `rounds` rounds of `block` decode steps of a then b (b first in odd rounds), on the synthetic shape `size`. */
export async function pairedDecode(size: string, threads: number, a: PairedConfig, b: PairedConfig, rounds = 12, block = 16): Promise<PairedResult> {
  const models = [];
  for (const c of [a, b]) {
    const backend = await createBackend('wasm', { dtype: c.dtype, activations: c.activations, threads });
    models.push(syntheticModel(size, backend).model);
  }
  try {
    const V = models[0]!.config.vocabSize;
    let seed = 12345;
    const tok = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % V; };
    const states = models.map((m) => m.newState());
    for (let i = 0; i < 2; i++) await models[i]!.forward(Array.from({ length: 16 }, tok), states[i]!); // warm-up
    const total = [0, 0], ratios: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const ms = [0, 0];
      for (const i of r % 2 ? [1, 0] : [0, 1]) {
        const t0 = performance.now();
        for (let k = 0; k < block; k++) await models[i]!.forward([tok()], states[i]!);
        ms[i] = performance.now() - t0;
        total[i] += ms[i]!;
      }
      ratios.push(ms[0]! / ms[1]!);
    }
    for (const s of states) s.free();
    const rate = (ms: number) => (rounds * block) / (ms / 1000);
    return { a_tok_s: rate(total[0]!), b_tok_s: rate(total[1]!), median_ratio: median(ratios), rounds };
  } finally {
    for (const m of models) await m.backend.dispose();
  }
}
