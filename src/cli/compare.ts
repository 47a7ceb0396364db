import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { compareLogits } from '../runtime/metrics.js';
import { UserError } from '../errors.js';

/** Reads a raw little-endian f32 file. */
function readF32(path: string): Float32Array {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (b.length === 0 || b.length % 4) throw new UserError(`${path}: ${b.length} bytes is not a whole number of float32 values`);
  const out = new Float32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(i * 4);
  for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i]!)) throw new UserError(`${path}: value ${i} is not finite`);
  return out;
}

/** A probability vector (all ≥ 0, summing to 1) rather than logits? */
function isDistribution(x: Float32Array): boolean {
  let s = 0;
  for (const v of x) { if (v < 0) return false; s += v; }
  return Math.abs(s - 1) < 1e-3;
}

export function register(program: Command): void {
  program
    .command('compare')
    .description('compare two raw f32 logit (or probability) dumps: L1, L2, L∞, KL both ways on the softmaxes, top-1/5/10 agreement')
    .argument('<a>', 'first dump (ours), e.g. final_logits.bin')
    .argument('<b>', 'second dump (reference)')
    .option('--json', 'print a JSON report')
    .addHelpText('after', '\nInputs that are already probability vectors (final_probs.bin) are used as they are; logits go through a float64 softmax.\n')
    .action((a: string, b: string, f: { json?: boolean }) => {
      const A = readF32(a), B = readF32(b);
      if (A.length !== B.length) throw new UserError(`${a} has ${A.length} values but ${b} has ${B.length}`);
      const probsA = isDistribution(A), probsB = isDistribution(B);
      // log p has the same softmax as the logits it came from, so probabilities compare through the same path.
      const asLogits = (x: Float32Array, isP: boolean) => (isP ? Float64Array.from(x, (p) => Math.log(p)) : x);
      const r = compareLogits(asLogits(A, probsA), asLogits(B, probsB));
      const report = { a, b, inputs: { a: probsA ? 'probs' : 'logits', b: probsB ? 'probs' : 'logits' }, ...r, logit_deviation: probsA || probsB ? null : r.logit_deviation };
      if (f.json) {
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return;
      }
      const e = (x: number) => x.toExponential(4);
      process.stdout.write(
        [
          `values      ${r.size}`,
          `L1          ${e(r.l1)}`,
          `L2          ${e(r.l2)}`,
          `Linf        ${e(r.linf)}`,
          `KL(A||B)    ${e(r.kl_a_b)}`,
          `KL(B||A)    ${e(r.kl_b_a)}`,
          `top-1       ${r.top1_agree ? 'agree' : 'DIFFER'}`,
          `top-5       ${(r.top5_overlap * 100).toFixed(0)}% overlap`,
          `top-10      ${(r.top10_overlap * 100).toFixed(0)}% overlap`,
          ...(report.logit_deviation === null ? [] : [`max|A-B|/std(B) ${e(report.logit_deviation)}`]),
        ].join('\n') + '\n',
      );
    });
}
