/**
 * A minimal TLS 1.3 client (TLS_AES_128_GCM_SHA256, X25519, ECDSA P-256 client certificate) written only to
 * test servers: it can present a certificate and sign its CertificateVerify with ANY key, which no stock
 * client allows (they refuse a key that does not match the certificate before connecting). A server that
 * does not check the CertificateVerify signature would accept a stolen public certificate as proof of
 * identity. RFC 8446 sections are cited where the bytes come from. Not for anything but tests.
 */
import net from "node:net";
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSign,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import { Buffer } from "node:buffer";

const u8 = (n: number) => Buffer.from([n & 0xff]);
const u16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number) => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b: Buffer) => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer) => Buffer.concat([u16(b.length), b]);
const vec24 = (b: Buffer) => Buffer.concat([u24(b.length), b]);
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest();
const hmac = (k: Buffer, d: Buffer) => createHmac("sha256", k).update(d).digest();

/** RFC 5869 with SHA-256 (one or two blocks are all TLS 1.3 needs here). */
function hkdfExtract(salt: Buffer, ikm: Buffer): Buffer {
  return hmac(salt, ikm);
}
function hkdfExpand(prk: Buffer, info: Buffer, len: number): Buffer {
  const out: Buffer[] = [];
  let t: Buffer = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).length < len; i++) {
    t = hmac(prk, Buffer.concat([t, info, u8(i)]));
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, len);
}
/** RFC 8446 7.1 HKDF-Expand-Label. */
function expandLabel(secret: Buffer, label: string, context: Buffer, len: number): Buffer {
  const info = Buffer.concat([u16(len), vec8(Buffer.from("tls13 " + label)), vec8(context)]);
  return hkdfExpand(secret, info, len);
}

interface Keys {
  key: Buffer;
  iv: Buffer;
  seq: number;
}
function trafficKeys(secret: Buffer): Keys {
  return {
    key: expandLabel(secret, "key", Buffer.alloc(0), 16),
    iv: expandLabel(secret, "iv", Buffer.alloc(0), 12),
    seq: 0,
  };
}
function nonce(k: Keys): Buffer {
  const n = Buffer.from(k.iv);
  const s = Buffer.alloc(12);
  s.writeBigUInt64BE(BigInt(k.seq), 4);
  for (let i = 0; i < 12; i++) n[i] ^= s[i];
  k.seq++;
  return n;
}
/** RFC 8446 5.2: TLSInnerPlaintext sealed into an application_data record. */
function seal(k: Keys, type: number, data: Buffer): Buffer {
  const inner = Buffer.concat([data, u8(type)]);
  const header = Buffer.concat([u8(0x17), u16(0x0303), u16(inner.length + 16)]);
  const c = createCipheriv("aes-128-gcm", k.key, nonce(k));
  c.setAAD(header);
  return Buffer.concat([header, c.update(inner), c.final(), c.getAuthTag()]);
}
function open(k: Keys, header: Buffer, body: Buffer): { type: number; data: Buffer } {
  const d = createDecipheriv("aes-128-gcm", k.key, nonce(k));
  d.setAAD(header);
  d.setAuthTag(body.subarray(body.length - 16));
  const inner = Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]);
  let end = inner.length - 1;
  while (end >= 0 && inner[end] === 0) end--;
  return { type: inner[end], data: inner.subarray(0, end) };
}

/** Reads whole TLS records from a socket. */
class RecordReader {
  #buf = Buffer.alloc(0);
  #waiters: (() => void)[] = [];
  #closed = false;
  constructor(sock: net.Socket) {
    sock.on("data", (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.#wake();
    });
    sock.on("close", () => {
      this.#closed = true;
      this.#wake();
    });
    sock.on("error", () => {/* seen as close */});
  }
  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }
  async next(): Promise<{ header: Buffer; type: number; body: Buffer } | null> {
    for (;;) {
      if (this.#buf.length >= 5) {
        const len = this.#buf.readUInt16BE(3);
        if (this.#buf.length >= 5 + len) {
          const header = this.#buf.subarray(0, 5);
          const body = this.#buf.subarray(5, 5 + len);
          this.#buf = this.#buf.subarray(5 + len);
          return { header: Buffer.from(header), type: header[0], body: Buffer.from(body) };
        }
      }
      if (this.#closed) return null;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }
}

export interface LiarResult {
  /** The handshake finished from our side (server Finished verified, ours sent). */
  handshakeDone: boolean;
  /** A TLS alert the server sent, if any (RFC 8446 6: description byte). */
  alert: number | null;
  /** Application data the server sent back (an HTTP response). */
  response: string;
}

/** Connects, presents `certDer`, signs CertificateVerify with `signingKeyPem` (P-256, PKCS#8 PEM), sends
 * `request` once the handshake is done, and collects the answer until the server closes. */
export async function tls13ClientWithAnyKey(opts: {
  host: string;
  port: number;
  serverName: string;
  certDer: Uint8Array;
  signingKeyPem: string;
  request: string;
}): Promise<LiarResult> {
  const sock = net.connect({ host: opts.host, port: opts.port });
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  const reader = new RecordReader(sock);
  const signingKey: KeyObject = createPrivateKey(opts.signingKeyPem);
  const eph = generateKeyPairSync("x25519");
  const ephPub = Buffer.from(eph.publicKey.export({ format: "jwk" }).x as string, "base64url");
  const result: LiarResult = { handshakeDone: false, alert: null, response: "" };
  try {
    // ClientHello (RFC 8446 4.1.2) with the extensions a TLS 1.3-only server needs.
    const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), vec16(body)]);
    const sni = Buffer.from(opts.serverName);
    const extensions = Buffer.concat([
      ext(0x0000, vec16(Buffer.concat([u8(0), vec16(sni)]))),
      ext(0x000a, vec16(u16(0x001d))),
      ext(0x000d, vec16(Buffer.concat([u16(0x0403), u16(0x0807), u16(0x0804)]))),
      ext(0x002b, vec8(u16(0x0304))),
      ext(0x0033, vec16(Buffer.concat([u16(0x001d), vec16(ephPub)]))),
    ]);
    const chBody = Buffer.concat([
      u16(0x0303),
      randomBytes(32),
      vec8(randomBytes(32)),
      vec16(u16(0x1301)),
      vec8(u8(0)),
      vec16(extensions),
    ]);
    const ch = Buffer.concat([u8(1), vec24(chBody)]);
    sock.write(Buffer.concat([u8(0x16), u16(0x0301), vec16(ch)]));
    const transcript: Buffer[] = [ch];

    // ServerHello in plaintext.
    let rec = await reader.next();
    if (!rec) return result;
    if (rec.type === 0x15) {
      result.alert = rec.body[1];
      return result;
    }
    const sh = rec.body;
    transcript.push(sh);
    let p = 4 + 2 + 32;
    p += 1 + sh[p];
    p += 2 + 1;
    const extEnd = p + 2 + sh.readUInt16BE(p);
    p += 2;
    let serverShare: Buffer | null = null;
    while (p < extEnd) {
      const t = sh.readUInt16BE(p);
      const l = sh.readUInt16BE(p + 2);
      if (t === 0x0033) serverShare = sh.subarray(p + 8, p + 8 + sh.readUInt16BE(p + 6));
      p += 4 + l;
    }
    if (!serverShare) throw new Error("no key share in ServerHello");
    const peer = createPublicKey({
      key: { kty: "OKP", crv: "X25519", x: serverShare.toString("base64url") },
      format: "jwk",
    });
    const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: peer });

    // Key schedule (RFC 8446 7.1).
    const zeros = Buffer.alloc(32);
    const early = hkdfExtract(zeros, zeros);
    const hs = hkdfExtract(expandLabel(early, "derived", sha256(Buffer.alloc(0)), 32), shared);
    const thash = () => sha256(Buffer.concat(transcript));
    const cHs = expandLabel(hs, "c hs traffic", thash(), 32);
    const sHs = expandLabel(hs, "s hs traffic", thash(), 32);
    const master = hkdfExtract(expandLabel(hs, "derived", sha256(Buffer.alloc(0)), 32), zeros);
    const serverHsKeys = trafficKeys(sHs);
    const clientHsKeys = trafficKeys(cHs);

    // Encrypted server flight: EncryptedExtensions, CertificateRequest, Certificate, CertificateVerify, Finished.
    let hsBuf = Buffer.alloc(0);
    let requestContext: Buffer | null = null;
    let serverFinished = false;
    while (!serverFinished) {
      rec = await reader.next();
      if (!rec) return result;
      if (rec.type === 0x14) continue; // middlebox-compatibility ChangeCipherSpec
      if (rec.type === 0x15) {
        result.alert = rec.body[1];
        return result;
      }
      const inner = open(serverHsKeys, rec.header, rec.body);
      if (inner.type === 0x15) {
        result.alert = inner.data[1];
        return result;
      }
      hsBuf = Buffer.concat([hsBuf, inner.data]);
      while (hsBuf.length >= 4) {
        const len = (hsBuf[1] << 16) | (hsBuf[2] << 8) | hsBuf[3];
        if (hsBuf.length < 4 + len) break;
        const msg = hsBuf.subarray(0, 4 + len);
        hsBuf = hsBuf.subarray(4 + len);
        if (msg[0] === 13) requestContext = msg.subarray(5, 5 + msg[4]);
        if (msg[0] === 20) {
          const finishedKey = expandLabel(sHs, "finished", Buffer.alloc(0), 32);
          if (!hmac(finishedKey, thash()).equals(msg.subarray(4))) throw new Error("bad server Finished");
          serverFinished = true;
        }
        transcript.push(Buffer.from(msg));
      }
    }
    const cAp = expandLabel(master, "c ap traffic", thash(), 32);
    const sAp = expandLabel(master, "s ap traffic", thash(), 32);

    // Our flight: Certificate (only if asked), CertificateVerify signed with whatever key we were given.
    const out: Buffer[] = [];
    if (requestContext !== null) {
      const entry = Buffer.concat([vec24(Buffer.from(opts.certDer)), vec16(Buffer.alloc(0))]);
      const cert = Buffer.concat([u8(11), vec24(Buffer.concat([vec8(requestContext), vec24(entry)]))]);
      transcript.push(cert);
      out.push(cert);
      const toSign = Buffer.concat([
        Buffer.alloc(64, 0x20),
        Buffer.from("TLS 1.3, client CertificateVerify"),
        u8(0),
        thash(),
      ]);
      const sig = createSign("sha256").update(toSign).sign(signingKey);
      const cv = Buffer.concat([u8(15), vec24(Buffer.concat([u16(0x0403), vec16(sig)]))]);
      transcript.push(cv);
      out.push(cv);
    }
    const fin = Buffer.concat([
      u8(20),
      vec24(hmac(expandLabel(cHs, "finished", Buffer.alloc(0), 32), thash())),
    ]);
    out.push(fin);
    sock.write(
      Buffer.concat([
        Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]),
        seal(clientHsKeys, 0x16, Buffer.concat(out)),
      ]),
    );
    result.handshakeDone = true;

    const clientAp = trafficKeys(cAp);
    const serverAp = trafficKeys(sAp);
    sock.write(seal(clientAp, 0x17, Buffer.from(opts.request)));
    for (;;) {
      rec = await reader.next();
      if (!rec) break;
      if (rec.type === 0x15) {
        result.alert = rec.body[1];
        break;
      }
      if (rec.type !== 0x17) continue;
      const inner = open(serverAp, rec.header, rec.body);
      if (inner.type === 0x15) {
        result.alert = inner.data[1];
        break;
      }
      if (inner.type === 0x17) result.response += inner.data.toString("utf8");
    }
    return result;
  } finally {
    sock.destroy();
  }
}
