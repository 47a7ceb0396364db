/**
 * A small byte trie over a fixed set of byte strings (enum values, a position's candidate property names).
 * Nodes are integers (0 is the root); the automaton keeps a node number in its state.
 */
export class LiteralTrie {
  /** children[n]: byte → child node. */
  private readonly children: Map<number, number>[] = [new Map()];
  /** end[n]: index of the string that ends at node n, or -1. */
  private readonly ends: number[] = [-1];
  /** Fewest bytes from node n to the end of some string (0 at an end). */
  private shortest: number[] = [];

  constructor(strings: readonly Uint8Array[]) {
    strings.forEach((s, index) => {
      let n = 0;
      for (const b of s) {
        let c = this.children[n]!.get(b);
        if (c === undefined) {
          c = this.children.length;
          this.children.push(new Map());
          this.ends.push(-1);
          this.children[n]!.set(b, c);
        }
        n = c;
      }
      if (this.ends[n]! < 0) this.ends[n] = index;
    });
    // Children always have larger numbers than their parent: one backward pass computes the distances.
    const dist = new Array<number>(this.children.length).fill(Infinity);
    for (let n = this.children.length - 1; n >= 0; n--) {
      if (this.ends[n]! >= 0) dist[n] = 0;
      for (const c of this.children[n]!.values()) dist[n] = Math.min(dist[n]!, dist[c]! + 1);
    }
    this.shortest = dist;
  }

  /** The child of node n along byte b, or -1. */
  child(n: number, b: number): number {
    return this.children[n]!.get(b) ?? -1;
  }

  /** Index of the string ending at node n, or -1. */
  end(n: number): number {
    return this.ends[n]!;
  }

  /** Whether any string continues past node n. */
  hasChildren(n: number): boolean {
    return this.children[n]!.size > 0;
  }

  /** Fewest bytes that complete a string from node n. */
  distance(n: number): number {
    return this.shortest[n]!;
  }

  /** The bytes strings can start with. */
  firstBytes(): number[] {
    return [...this.children[0]!.keys()];
  }

  get size(): number {
    return this.children.length;
  }
}
