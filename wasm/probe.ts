// Memory-bandwidth probe (`rwkv7 bench` prints every decode figure as a share of it): a read loop over [p + lo, p + hi)
// with the same access pattern as the mat-vec kernels — two streams far apart per thread, 4 loads of 16 bytes per
// step — so the figure is what this machine's memory can give these kernels, not a vendor's peak.

let sinkP: v128 = i32x4.splat(0);

/** Read bytes [lo, hi) of the buffer at p (lo, hi multiples of 128: the pool splits in units of 128). */
export function bw_read(lo: i32, hi: i32, p: usize): void {
  const h = (<usize>(hi - lo) >> 1) & ~(<usize>63);
  let a = i32x4.splat(0), b = a;
  const s0 = p + <usize>lo, s1 = s0 + h;
  for (let i: usize = 0; i < h; i += 64) {
    a = v128.or(a, v128.or(v128.load(s0 + i), v128.load(s0 + i, 16)));
    b = v128.or(b, v128.or(v128.load(s0 + i, 32), v128.load(s0 + i, 48)));
    a = v128.or(a, v128.or(v128.load(s1 + i), v128.load(s1 + i, 16)));
    b = v128.or(b, v128.or(v128.load(s1 + i, 32), v128.load(s1 + i, 48)));
  }
  sinkP = v128.or(sinkP, v128.or(a, b));
}
