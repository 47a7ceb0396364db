/**
 * Will a model of this shape fit on a backend? The wasm backend keeps weights, state and activations in one
 * wasm32 memory of at most 4 GiB; a model that cannot fit is refused before any weight is uploaded.
 */
import type { Backend } from '../backends/kernels.js';
import type { ModelConfig } from '../model/config.js';
import { wasmModelBytes, WASM_MAX_BYTES } from '../backends/wasm/index.js';
import { UserError } from '../errors.js';

/** The weight matrices a decode step reads, as [rows, cols, canonical name] (the embedding is a row lookup). */
export function matrixShapes(c: ModelConfig): Array<[rows: number, cols: number, name: string]> {
  const C = c.nEmbd, F = c.dimFfn;
  const out: Array<[number, number, string]> = [];
  for (let i = 0; i < c.nLayer; i++) {
    for (const m of ['receptance', 'key', 'value', 'output']) out.push([C, C, `blocks.${i}.att.${m}.weight`]);
    const loras: Array<[string, number]> = [['w', c.lora.decay], ['a', c.lora.a], ['g', c.lora.gate]];
    if (i > 0) loras.push(['v', c.lora.v]);
    for (const [x, r] of loras) { out.push([r, C, `blocks.${i}.att.${x}1`]); out.push([C, r, `blocks.${i}.att.${x}2`]); }
    out.push([F, C, `blocks.${i}.ffn.key.weight`], [C, F, `blocks.${i}.ffn.value.weight`]);
  }
  out.push([c.vocabSize, C, 'head.weight']);
  return out;
}

/** Throws a UserError naming the memory needed when `config` cannot fit on `backend` (only wasm has a hard cap). */
export function assertModelFits(config: ModelConfig, backend: Backend, what: string): void {
  if (backend.name !== 'wasm') return;
  const C = config.nEmbd, L = config.nLayer, chunk = backend.maxChunk;
  const extra = L * (16 * C + 2 * C + config.nHead * config.headSize * config.headSize) + chunk * (24 * C + config.dimFfn + config.vocabSize);
  const need = wasmModelBytes(matrixShapes(config), backend.weightDType, extra);
  if (need > WASM_MAX_BYTES) {
    const dt = backend.weightDType;
    const hint = dt === 'q4' ? 'use --backend webgpu' : dt === 'int8' || dt === 'q8_0' ? 'try --dtype q4, or --backend webgpu' : 'try --dtype bf16, int8 or q4, or --backend webgpu';
    throw new UserError(`${what} with ${backend.weightDType} weights needs ${(need / 2 ** 30).toFixed(2)} GiB of wasm memory; the wasm backend has 4 GiB (${hint})`);
  }
}
