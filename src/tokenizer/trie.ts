/**
 * A byte trie over the vocabulary, laid out in flat typed arrays for a fast greedy
 * longest-match encoder (the same rule as the official RWKV tokenizer: at each position take
 * the longest token whose bytes match there).
 *
 * Layout:
 *   - `byteToken[b]`: the token that is exactly the single byte b (or -1).
 *   - `pairNode[(b0 << 8) | b1]`: the trie node for the two-byte prefix b0 b1 (0 = no token starts so).
 *     This table replaces the two widest levels of the trie with one lookup.
 *   - Deeper nodes (depth >= 2) are numbered from 1; `nodeToken[n]` is the token ending at node n
 *     (or -1). Children of node n are either in a dense 256-entry row `dense[denseRow[n] .. + 256]`
 *     (for nodes with many children), or in the sorted edge list
 *     `edgeByte/edgeNode[edgeStart[n] .. edgeStart[n + 1]]`, scanned linearly (it is short).
 *   - Node 0 is never a child, so 0 means "no such child" everywhere.
 */
import type { Vocab } from './vocab.js';
import { FormatError } from '../errors.js';

/** Nodes with more children than this get a dense 256-entry child row. */
const DENSE_THRESHOLD = 8;

export class ByteTrie {
  readonly byteToken: Int32Array;
  readonly pairNode: Int32Array;
  readonly nodeToken: Int32Array;
  readonly edgeStart: Int32Array;
  readonly edgeByte: Uint8Array;
  readonly edgeNode: Int32Array;
  readonly denseRow: Int32Array;
  readonly dense: Int32Array;

  constructor(vocab: Vocab, name: string) {
    const { size, data, offsets } = vocab;
    this.byteToken = new Int32Array(256).fill(-1);
    this.pairNode = new Int32Array(1 << 16);

    // Build pass: nodes of depth >= 2 with children in sorted singly-linked sibling lists.
    // Every node except the first two levels corresponds to at least one token byte, so the
    // total token length bounds the node count.
    const cap = data.length + 2;
    const token = new Int32Array(cap).fill(-1);
    const firstChild = new Int32Array(cap);
    const nextSibling = new Int32Array(cap);
    const label = new Uint8Array(cap);
    const childCount = new Int32Array(cap);
    let nodes = 1; // node 0 is reserved as "none"

    const claim = (node: number, id: number, existing: number): void => {
      if (existing >= 0) {
        throw new FormatError(`${name}: tokens ${existing} and ${id} have the same bytes; the encoding would be ambiguous`);
      }
      token[node] = id;
    };

    for (let id = 0; id < size; id++) {
      const start = offsets[id]!;
      const len = offsets[id + 1]! - start;
      if (len === 0) continue;
      const b0 = data[start]!;
      if (len === 1) {
        if (this.byteToken[b0]! >= 0) claim(0, id, this.byteToken[b0]!);
        this.byteToken[b0] = id;
        continue;
      }
      const key = (b0 << 8) | data[start + 1]!;
      let node = this.pairNode[key]!;
      if (node === 0) node = this.pairNode[key] = nodes++;
      for (let k = 2; k < len; k++) {
        const b = data[start + k]!;
        // Find b among node's children (kept sorted by byte), inserting it if missing.
        let prev = 0;
        let child = firstChild[node]!;
        while (child !== 0 && label[child]! < b) {
          prev = child;
          child = nextSibling[child]!;
        }
        if (child === 0 || label[child] !== b) {
          const fresh = nodes++;
          label[fresh] = b;
          nextSibling[fresh] = child;
          if (prev === 0) firstChild[node] = fresh;
          else nextSibling[prev] = fresh;
          childCount[node]!++;
          child = fresh;
        }
        node = child;
      }
      claim(node, id, token[node]!);
    }

    // Freeze into flat arrays.
    this.nodeToken = token.slice(0, nodes);
    this.edgeStart = new Int32Array(nodes + 1);
    this.denseRow = new Int32Array(nodes).fill(-1);
    let edges = 0;
    let denseRows = 0;
    for (let n = 0; n < nodes; n++) {
      if (childCount[n]! > DENSE_THRESHOLD) denseRows++;
      else edges += childCount[n]!;
    }
    this.edgeByte = new Uint8Array(edges);
    this.edgeNode = new Int32Array(edges);
    this.dense = new Int32Array(denseRows * 256);
    let e = 0;
    let row = 0;
    for (let n = 0; n < nodes; n++) {
      this.edgeStart[n] = e;
      if (childCount[n]! > DENSE_THRESHOLD) {
        const base = row++ * 256;
        this.denseRow[n] = base;
        for (let c = firstChild[n]!; c !== 0; c = nextSibling[c]!) this.dense[base + label[c]!] = c;
      } else {
        for (let c = firstChild[n]!; c !== 0; c = nextSibling[c]!) {
          this.edgeByte[e] = label[c]!;
          this.edgeNode[e] = c;
          e++;
        }
      }
    }
    this.edgeStart[nodes] = e;
  }

  /** Number of trie nodes below the two-byte table (for diagnostics). */
  get nodeCount(): number {
    return this.nodeToken.length;
  }

  /**
   * Greedy longest-match encoding of `bytes[start .. end)`, appending token ids to `out`.
   * Returns -1 on success, or the offset of a byte that no token can cover (only possible with a
   * vocabulary lacking some single-byte tokens).
   */
  encodeInto(bytes: Uint8Array, start: number, end: number, out: number[]): number {
    // Hoist everything into locals: this loop is the tokenizer's hot path.
    const byteToken = this.byteToken;
    const pairNode = this.pairNode;
    const nodeToken = this.nodeToken;
    const edgeStart = this.edgeStart;
    const edgeByte = this.edgeByte;
    const edgeNode = this.edgeNode;
    const denseRow = this.denseRow;
    const dense = this.dense;

    let i = start;
    while (i < end) {
      const b0 = bytes[i]!;
      let bestToken = byteToken[b0]!;
      let bestEnd = i + 1;
      if (i + 1 < end) {
        let node = pairNode[(b0 << 8) | bytes[i + 1]!]!;
        let j = i + 2; // bytes[i .. j) is the path to `node`
        while (node !== 0) {
          const t = nodeToken[node]!;
          if (t >= 0) {
            bestToken = t;
            bestEnd = j;
          }
          if (j >= end) break;
          const b = bytes[j]!;
          const row = denseRow[node]!;
          if (row >= 0) {
            node = dense[row + b]!;
          } else {
            const s = edgeStart[node]!;
            const e = edgeStart[node + 1]!;
            node = 0;
            // Edges are sorted by byte: stop at the first one that is >= b.
            for (let k = s; k < e; k++) {
              const eb = edgeByte[k]!;
              if (eb >= b) {
                if (eb === b) node = edgeNode[k]!;
                break;
              }
            }
          }
          j++;
        }
      }
      if (bestToken < 0) return i;
      out.push(bestToken);
      i = bestEnd;
    }
    return -1;
  }
}
