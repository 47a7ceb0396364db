/**
 * A byte trie over the vocabulary, laid out in flat typed arrays for a fast greedy
 * longest-match encoder (the same rule as the official RWKV tokenizer: at each position take
 * the longest token whose bytes match there).
 *
 * Layout:
 *   - `byteToken[b]`: the token that is exactly the single byte b (or -1).
 *   - `pairNode[(b0 << 8) | b1]`: the trie node for the two-byte prefix b0 b1 (0 = no token starts
 *     so). This one lookup replaces the two widest levels of the trie.
 *   - Deeper nodes (depth >= 2) are records in one Int32Array `trie`, numbered depth-first so a
 *     token's path is mostly contiguous in memory. A record holds the token ending at the node
 *     and its children: a short sorted edge list inline, or (for nodes with many children) a
 *     dense 256-entry row in `dense`. The exact record format is described in the constructor.
 *   - A node is named by its record's offset; offset 0 is a dummy, so 0 means "no node".
 */
import type { Vocab } from './vocab.js';
import { FormatError } from '../errors.js';

/** Nodes with more children than this get a dense 256-entry child row. */
const DENSE_THRESHOLD = 8;

export class ByteTrie {
  readonly byteToken: Int32Array;
  readonly pairNode: Int32Array;
  /** Node records of the nodes of depth >= 2 (layout described in the constructor). */
  readonly trie: Int32Array;
  /** Dense child rows (256 entries each) of the nodes with many children. */
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

    // Freeze into one flat Int32Array of node records, numbered in depth-first order so that a
    // token's path lies mostly in consecutive memory (few cache misses per step). A node is
    // referred to by the offset of its record:
    //   record[0]  token ending at this node, or -1
    //   record[1]  number of child edges c >= 0, followed by c edges `(child << 8) | byte`
    //              sorted by byte; or ~row (< 0) for a node whose children are in dense[row .. row + 256]
    // Offset 0 holds a dummy record, so 0 means "no node".
    const isDense = (n: number): boolean => childCount[n]! > DENSE_THRESHOLD;
    const offsetOf = new Int32Array(nodes);
    const order = new Int32Array(nodes); // old node numbers in depth-first preorder
    let visited = 0;
    let recordsLen = 2;
    let denseRows = 0;
    const stack = new Int32Array(nodes);
    for (let key = 0; key < 1 << 16; key++) {
      const root = this.pairNode[key]!;
      if (root === 0) continue;
      let sp = 0;
      stack[sp++] = root;
      while (sp > 0) {
        const n = stack[--sp]!;
        order[visited++] = n;
        offsetOf[n] = recordsLen;
        if (isDense(n)) {
          recordsLen += 2;
          denseRows++;
        } else {
          recordsLen += 2 + childCount[n]!;
        }
        // (The largest byte is popped, and so placed, first; the order does not matter.)
        for (let c = firstChild[n]!; c !== 0; c = nextSibling[c]!) stack[sp++] = c;
      }
      this.pairNode[key] = offsetOf[root]!;
    }
    if (recordsLen >= 1 << 23) throw new FormatError(`${name}: vocabulary too large for the tokenizer's trie`);
    const trie = new Int32Array(recordsLen);
    const dense = new Int32Array(denseRows * 256);
    trie[0] = -1;
    let row = 0;
    for (let v = 0; v < visited; v++) {
      const n = order[v]!;
      const o = offsetOf[n]!;
      trie[o] = token[n]!;
      if (isDense(n)) {
        const base = row++ * 256;
        trie[o + 1] = ~base;
        for (let c = firstChild[n]!; c !== 0; c = nextSibling[c]!) dense[base + label[c]!] = offsetOf[c]!;
      } else {
        trie[o + 1] = childCount[n]!;
        let e = o + 2;
        for (let c = firstChild[n]!; c !== 0; c = nextSibling[c]!) trie[e++] = (offsetOf[c]! << 8) | label[c]!;
      }
    }
    this.trie = trie;
    this.dense = dense;
  }

  /**
   * Greedy longest-match encoding of `bytes[start .. end)`, writing token ids to `out` from
   * `outPos` (`out` needs room for `end - start` ids: no token is shorter than a byte).
   * Returns the output position after the last id; or, if some byte cannot be covered by any
   * token (only possible with a vocabulary lacking some single-byte tokens), ~offset of that byte.
   */
  encodeInto(bytes: Uint8Array, start: number, end: number, out: Int32Array, outPos: number): number {
    // Hoist everything into locals: this loop is the tokenizer's hot path.
    const byteToken = this.byteToken;
    const pairNode = this.pairNode;
    const trie = this.trie;
    const dense = this.dense;

    let i = start;
    let o = outPos;
    while (i < end) {
      const b0 = bytes[i]!;
      let bestToken = byteToken[b0]!;
      let bestEnd = i + 1;
      if (i + 1 < end) {
        let node = pairNode[(b0 << 8) | bytes[i + 1]!]!;
        let j = i + 2; // bytes[i .. j) is the path to `node`
        while (node !== 0) {
          const t = trie[node]!;
          if (t >= 0) {
            bestToken = t;
            bestEnd = j;
          }
          if (j >= end) break;
          const b = bytes[j]!;
          const header = trie[node + 1]!;
          if (header < 0) {
            node = dense[~header + b]!;
          } else {
            const stop = node + 2 + header;
            let k = node + 2;
            node = 0;
            // Edges are sorted by byte: stop at the first one that is >= b.
            for (; k < stop; k++) {
              const edge = trie[k]!;
              const eb = edge & 0xff;
              if (eb >= b) {
                if (eb === b) node = edge >>> 8;
                break;
              }
            }
          }
          j++;
        }
      }
      if (bestToken < 0) return ~i;
      out[o++] = bestToken;
      i = bestEnd;
    }
    return o;
  }
}
