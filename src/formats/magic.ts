/**
 * What kind of checkpoint a file is, from its first bytes: the one place the magic numbers live (the readers'
 * format sniffing, the state-file reader, and the download checks of `rwkv7 pull` and the browser cache use it).
 */
import { MAX_HEADER_BYTES } from './safetensors.js';

export type CheckpointMagic = 'pth' | 'gguf' | 'safetensors';

/**
 * `pth`: a zip ("PK", as torch.save writes it); `gguf`: "GGUF"; `safetensors`: a little-endian u64 header length no
 * larger than the reader accepts, then the header's '{'. Undefined when the bytes are none of these.
 */
export function checkpointMagic(head: Uint8Array): CheckpointMagic | undefined {
  if (head.length >= 2 && head[0] === 0x50 && head[1] === 0x4b) return 'pth';
  if (head.length >= 4 && head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46) return 'gguf';
  if (head.length >= 9 && head[8] === 0x7b) {
    const len = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
    if (len <= BigInt(MAX_HEADER_BYTES)) return 'safetensors';
  }
  return undefined;
}
