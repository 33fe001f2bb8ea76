// The frames of `/api/v1/output/<session>` (crates/output/src/frame.rs): a 15-byte head —
// kind (1), key length (2), offset (8), data length (4), big-endian — then key and data.

export type Frame =
  | { kind: "output"; key: string; channel: "stdout" | "stderr"; offset: number; data: Uint8Array }
  | { kind: "skipped"; key: string; channel: "stdout" | "stderr"; to: number }
  | { kind: "begin"; key: string; source: string }
  | { kind: "state"; key: string; status: string; exitCode?: number }
  | { kind: "error"; key: string; message: string }
  | { kind: "done"; status: string };

const HEAD = 15;
const MAX_KEY = 1024;
const MAX_DATA = 256 * 1024;
const text = new TextDecoder();

/** Splits a byte stream into frames; bytes of an unfinished frame wait for the next chunk. */
export class FrameReader {
  private buf = new Uint8Array(0);

  push(chunk: Uint8Array): Frame[] {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    const out: Frame[] = [];
    let at = 0;
    while (joined.length - at >= HEAD) {
      const v = new DataView(joined.buffer, joined.byteOffset + at, HEAD);
      const kind = v.getUint8(0);
      const keyLen = v.getUint16(1);
      const offset = Number(v.getBigUint64(3));
      const dataLen = v.getUint32(11);
      if (keyLen > MAX_KEY || dataLen > MAX_DATA) throw new Error(`bad frame: key ${keyLen} B, data ${dataLen} B`);
      if (joined.length - at < HEAD + keyLen + dataLen) break;
      const key = text.decode(joined.subarray(at + HEAD, at + HEAD + keyLen));
      const data = joined.slice(at + HEAD + keyLen, at + HEAD + keyLen + dataLen);
      at += HEAD + keyLen + dataLen;
      out.push(decode(kind, key, offset, data));
    }
    this.buf = joined.slice(at);
    return out;
  }
}

function decode(kind: number, key: string, offset: number, data: Uint8Array): Frame {
  switch (kind) {
    case 1:
    case 2:
      return { kind: "output", key, channel: kind === 1 ? "stdout" : "stderr", offset, data };
    case 3:
    case 4:
      return { kind: "skipped", key, channel: kind === 3 ? "stdout" : "stderr", to: offset };
    case 5:
      return { kind: "begin", key, source: text.decode(data) };
    case 6: {
      const s = JSON.parse(text.decode(data)) as { status: string; exit_code?: number };
      return { kind: "state", key, status: s.status, exitCode: s.exit_code };
    }
    case 7:
      return { kind: "error", key, message: text.decode(data) };
    case 8:
      return { kind: "done", status: text.decode(data) };
    default:
      throw new Error(`bad frame kind ${kind}`);
  }
}
