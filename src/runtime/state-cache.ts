/**
 * A bounded LRU cache of model states keyed by the token prefix that produced them.
 *
 * An RWKV state after tokens t[0..k) is a pure function of those tokens, so a request whose prompt starts with
 * a cached prefix can start from a copy of that state and only prefill the rest. The server stores the state at
 * the end of every prompt (before generating) and, optionally, after prompt + completion, so that the next chat
 * turn (same history + the answer + a new user message) only processes its new tokens.
 *
 * Layout: a hash map from "length:hash of the prefix" to an entry that also holds the prefix's tokens, which are
 * compared in full on every hit (a hash collision can never hand out a wrong state). A lookup hashes every
 * prefix of the query once (O(n)) and then probes only the prefix lengths that are actually cached, longest
 * first. Entries live in a Map in least-recently-used order (a hit moves the entry to the back); inserting
 * evicts from the front until the total size fits the budget.
 *
 * An entry may also keep the logits after its last token. Without them, an entry can only serve queries that
 * extend it (the caller must run at least one token to get logits to sample from); with them it also serves
 * the exact same sequence (a repeated or regenerated request) without any prefill.
 *
 * Ownership: the cache owns its states (backend buffers). `lookup` never hands one out; it copies the match into
 * a state the caller owns (`clone`), and `insert` stores its own copy. So nothing a request does to its state can
 * reach the cache or another request, and eviction (`free`) can never pull a state from under a request.
 */
import type { State } from '../model/state.js';

export interface StateCacheStats {
  entries: number;
  bytes: number;
  budgetBytes: number;
  hits: number;
  misses: number;
  inserts: number;
  evictions: number;
  /** Prompt tokens that were not prefilled thanks to a hit (sum over lookups). */
  savedTokens: number;
}

interface Entry {
  key: string;
  tokens: Int32Array;
  state: State;
  /** Logits after the last token, when stored: then a query equal to `tokens` needs no forward pass at all. */
  logits?: Float32Array;
  bytes: number;
}

/** Size of a state in bytes (f32 values: per layer two C-vectors and one H×N×N matrix). */
export function stateBytes(s: State): number {
  let n = 0;
  for (let i = 0; i < s.attX.length; i++) n += s.attX[i]!.length + s.ffnX[i]!.length + s.wkv[i]!.length;
  return n * 4;
}

/**
 * Hashes of every prefix of `tokens`: out[k] is the hash of tokens[0..k) (out[0] is the hash of nothing).
 * Two independent 32-bit multiplicative hashes, printed together, so accidental collisions are rare; they are
 * harmless anyway because hits are verified against the stored tokens.
 */
function prefixHashes(tokens: ArrayLike<number>): string[] {
  const out: string[] = new Array(tokens.length + 1);
  let h1 = 0x811c9dc5;
  let h2 = 0x27d4eb2f;
  out[0] = '0.0';
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]! >>> 0;
    h1 = Math.imul(h1 ^ t, 0x01000193) >>> 0;
    h2 = Math.imul((h2 + t) >>> 0, 0x9e3779b1) >>> 0;
    h2 = (h2 ^ (h2 >>> 15)) >>> 0;
    out[i + 1] = `${h1.toString(36)}.${h2.toString(36)}`;
  }
  return out;
}

/** "length:hash", prefixed by "origin|" for sequences that start from an initial state other than zero. */
function cacheKey(origin: string, length: number, hash: string): string {
  return origin ? `${origin}|${length}:${hash}` : `${length}:${hash}`;
}

function samePrefix(stored: Int32Array, tokens: ArrayLike<number>): boolean {
  if (tokens.length < stored.length) return false;
  for (let i = 0; i < stored.length; i++) if (stored[i] !== tokens[i]) return false;
  return true;
}

export interface CacheHit {
  /** How many leading tokens of the query the returned state already holds (0: no hit, a fresh state). */
  length: number;
  /** A state the caller owns (free it when done): a copy of the cached one, or a fresh zero state. */
  state: State;
  /** A copy of the logits after the whole query, when `length` is the whole query (then nothing is left to run). */
  logits?: Float32Array;
}

export class StateCache {
  /** key → entry, in least-recently-used order (first = oldest). */
  private readonly entries = new Map<string, Entry>();
  /** prefix length → number of entries of that length (lookups probe only these lengths). */
  private readonly lengths = new Map<number, number>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private inserts = 0;
  private evictions = 0;
  private savedTokens = 0;

  /** @param budgetBytes most bytes of cached state kept (0 disables the cache). */
  constructor(readonly budgetBytes: number) {}

  get enabled(): boolean {
    return this.budgetBytes > 0;
  }

  /**
   * Finds the longest usable cached prefix of `tokens` and returns a copy of its state, or a fresh state from
   * `fresh()` when nothing matches. Usable: a proper prefix, or the whole of `tokens` if that entry kept its
   * logits (so the caller always has either tokens left to run or the logits to sample from).
   * `origin` names the state the sequences start from (default '': the zero state; e.g. an initial state's
   * `fingerprint`): entries of different origins never match each other, and share the one budget.
   */
  lookup(tokens: ArrayLike<number>, fresh: () => State, origin = ''): CacheHit {
    if (this.enabled && this.entries.size > 0) {
      const candidates = [...this.lengths.keys()].filter((n) => n > 0 && n <= tokens.length).sort((a, b) => b - a);
      if (candidates.length > 0) {
        const hashes = prefixHashes(Array.prototype.slice.call(tokens, 0, candidates[0]) as number[]);
        for (const n of candidates) {
          const key = cacheKey(origin, n, hashes[n]!);
          const e = this.entries.get(key);
          if (e && samePrefix(e.tokens, tokens) && (n < tokens.length || e.logits)) {
            // Move to the back: most recently used.
            this.entries.delete(key);
            this.entries.set(key, e);
            this.hits++;
            this.savedTokens += n;
            return { length: n, state: e.state.clone(), logits: n === tokens.length ? e.logits!.slice() : undefined };
          }
        }
      }
    }
    this.misses++;
    return { length: 0, state: fresh() };
  }

  /** Whether exactly this token sequence is cached (does not count as a use). */
  has(tokens: ArrayLike<number>, origin = ''): boolean {
    const key = cacheKey(origin, tokens.length, prefixHashes(tokens)[tokens.length]!);
    const e = this.entries.get(key);
    return e !== undefined && e.tokens.length === tokens.length && samePrefix(e.tokens, tokens);
  }

  /**
   * Stores a copy of `state`, which must hold exactly `tokens` (from the zero state, or from the initial state
   * named by `origin`), and of `logits` (those after the last token) when given. Returns false when the cache is
   * disabled, the sequence is empty or already cached, or one entry alone exceeds the budget.
   */
  insert(tokens: ArrayLike<number>, state: State, logits?: Float32Array, origin = ''): boolean {
    if (!this.enabled || tokens.length === 0) return false;
    const bytes = stateBytes(state) + (logits ? logits.byteLength : 0);
    if (bytes > this.budgetBytes) return false;
    const key = cacheKey(origin, tokens.length, prefixHashes(tokens)[tokens.length]!);
    const old = this.entries.get(key);
    if (old) {
      if (old.tokens.length === tokens.length && samePrefix(old.tokens, tokens)) {
        // Already cached: just mark it as recently used (and keep the logits if it had none).
        if (!old.logits && logits && this.bytes + logits.byteLength <= this.budgetBytes) {
          old.logits = logits.slice();
          old.bytes += logits.byteLength;
          this.bytes += logits.byteLength;
        }
        this.entries.delete(key);
        this.entries.set(key, old);
        return false;
      }
      this.remove(old); // a hash collision: the newer sequence wins
    }
    while (this.bytes + bytes > this.budgetBytes && this.entries.size > 0) {
      this.remove(this.entries.values().next().value as Entry);
      this.evictions++;
    }
    const e: Entry = { key, tokens: Int32Array.from(tokens as ArrayLike<number>), state: state.clone(), logits: logits?.slice(), bytes };
    this.entries.set(key, e);
    this.lengths.set(e.tokens.length, (this.lengths.get(e.tokens.length) ?? 0) + 1);
    this.bytes += bytes;
    this.inserts++;
    return true;
  }

  private remove(e: Entry): void {
    this.entries.delete(e.key);
    const n = (this.lengths.get(e.tokens.length) ?? 1) - 1;
    if (n > 0) this.lengths.set(e.tokens.length, n);
    else this.lengths.delete(e.tokens.length);
    this.bytes -= e.bytes;
    e.state.free();
  }

  /** Drops every entry (frees their states). */
  clear(): void {
    for (const e of [...this.entries.values()]) this.remove(e);
  }

  stats(): StateCacheStats {
    return {
      entries: this.entries.size,
      bytes: this.bytes,
      budgetBytes: this.budgetBytes,
      hits: this.hits,
      misses: this.misses,
      inserts: this.inserts,
      evictions: this.evictions,
      savedTokens: this.savedTokens,
    };
  }
}
