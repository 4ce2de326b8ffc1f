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
  /** Bytes sent before the ClientHello (a securechat listener's knock, contract/knock.ts). */
  knock?: Uint8Array;
}): Promise<LiarResult> {
  const sock = net.connect({ host: opts.host, port: opts.port });
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  if (opts.knock) sock.write(opts.knock);
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

export interface LiarServerResult {
  /** The client sent its Finished: it accepted our CertificateVerify. */
  clientFinished: boolean;
  /** A TLS alert the client sent (RFC 8446 6: description byte), if any. */
  alert: number | null;
  /** Application data the client sent after its Finished (an HTTP request), decrypted. */
  request: string;
}

export interface LiarServer {
  port: number;
  /** What happened on the first connection (resolves once it has closed). */
  result: Promise<LiarServerResult>;
  close(): Promise<void>;
}

/** The SERVER role: a minimal TLS 1.3 server (TLS_AES_128_GCM_SHA256, X25519) presenting `certDer` and
 * signing its CertificateVerify (RFC 8446 4.4.3, ecdsa_secp256r1_sha256) with `signingKeyPem`, which may be
 * any P-256 key: a client that does not check that signature would take a public certificate, copied from
 * anywhere, as proof that it reached the certificate's owner. With the certificate's own key it is an honest
 * (if tiny) server, which is the control that shows a refusal comes from the signature check. It serves one
 * connection and answers nothing; `result` says whether the client finished the handshake. */
export async function tls13ServerWithAnyKey(opts: {
  certDer: Uint8Array;
  signingKeyPem: string;
}): Promise<LiarServer> {
  const signingKey: KeyObject = createPrivateKey(opts.signingKeyPem);
  let resolveResult!: (r: LiarServerResult) => void;
  const result = new Promise<LiarServerResult>((r) => resolveResult = r);
  const sockets = new Set<net.Socket>();
  let served = false;
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    if (served) {
      sock.destroy();
      return;
    }
    served = true;
    serveOne(sock, opts.certDer, signingKey).then(
      resolveResult,
      () => resolveResult({ clientFinished: false, alert: null, request: "" }),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    result,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function serveOne(
  sock: net.Socket,
  certDer: Uint8Array,
  signingKey: KeyObject,
): Promise<LiarServerResult> {
  const reader = new RecordReader(sock);
  const out: LiarServerResult = { clientFinished: false, alert: null, request: "" };
  try {
    // ClientHello (RFC 8446 4.1.2), possibly over several records.
    let hello = Buffer.alloc(0);
    for (;;) {
      const rec = await reader.next();
      if (!rec) return out;
      if (rec.type !== 0x16) throw new Error("expected a handshake record");
      hello = Buffer.concat([hello, rec.body]);
      if (hello.length >= 4 && hello.length >= 4 + ((hello[1] << 16) | (hello[2] << 8) | hello[3])) break;
    }
    const ch = hello.subarray(0, 4 + ((hello[1] << 16) | (hello[2] << 8) | hello[3]));
    let p = 4 + 2 + 32;
    const sessionId = ch.subarray(p + 1, p + 1 + ch[p]);
    p += 1 + ch[p];
    p += 2 + ch.readUInt16BE(p);
    p += 1 + ch[p];
    const extEnd = p + 2 + ch.readUInt16BE(p);
    p += 2;
    let clientShare: Buffer | null = null;
    while (p < extEnd) {
      const t = ch.readUInt16BE(p);
      const l = ch.readUInt16BE(p + 2);
      if (t === 0x0033) {
        let q = p + 6;
        while (q < p + 4 + l) {
          const group = ch.readUInt16BE(q);
          const klen = ch.readUInt16BE(q + 2);
          if (group === 0x001d) clientShare = ch.subarray(q + 4, q + 4 + klen);
          q += 4 + klen;
        }
      }
      p += 4 + l;
    }
    if (!clientShare) throw new Error("no X25519 key share in ClientHello");
    const eph = generateKeyPairSync("x25519");
    const ephPub = Buffer.from(eph.publicKey.export({ format: "jwk" }).x as string, "base64url");
    const shared = diffieHellman({
      privateKey: eph.privateKey,
      publicKey: createPublicKey({
        key: { kty: "OKP", crv: "X25519", x: Buffer.from(clientShare).toString("base64url") },
        format: "jwk",
      }),
    });
    const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), vec16(body)]);
    const shBody = Buffer.concat([
      u16(0x0303),
      randomBytes(32),
      vec8(Buffer.from(sessionId)),
      u16(0x1301),
      u8(0),
      vec16(Buffer.concat([
        ext(0x002b, u16(0x0304)),
        ext(0x0033, Buffer.concat([u16(0x001d), vec16(ephPub)])),
      ])),
    ]);
    const sh = Buffer.concat([u8(2), vec24(shBody)]);
    const transcript: Buffer[] = [Buffer.from(ch), sh];
    const thash = () => sha256(Buffer.concat(transcript));

    // Key schedule (RFC 8446 7.1), as in the client above.
    const zeros = Buffer.alloc(32);
    const early = hkdfExtract(zeros, zeros);
    const hs = hkdfExtract(expandLabel(early, "derived", sha256(Buffer.alloc(0)), 32), shared);
    const cHs = expandLabel(hs, "c hs traffic", thash(), 32);
    const sHs = expandLabel(hs, "s hs traffic", thash(), 32);
    const master = hkdfExtract(expandLabel(hs, "derived", sha256(Buffer.alloc(0)), 32), zeros);
    const serverHsKeys = trafficKeys(sHs);
    const clientHsKeys = trafficKeys(cHs);

    const ee = Buffer.concat([u8(8), vec24(vec16(Buffer.alloc(0)))]);
    transcript.push(ee);
    const entry = Buffer.concat([vec24(Buffer.from(certDer)), vec16(Buffer.alloc(0))]);
    const cert = Buffer.concat([u8(11), vec24(Buffer.concat([vec8(Buffer.alloc(0)), vec24(entry)]))]);
    transcript.push(cert);
    const toSign = Buffer.concat([
      Buffer.alloc(64, 0x20),
      Buffer.from("TLS 1.3, server CertificateVerify"),
      u8(0),
      thash(),
    ]);
    const sig = createSign("sha256").update(toSign).sign(signingKey);
    const cv = Buffer.concat([u8(15), vec24(Buffer.concat([u16(0x0403), vec16(sig)]))]);
    transcript.push(cv);
    const fin = Buffer.concat([
      u8(20),
      vec24(hmac(expandLabel(sHs, "finished", Buffer.alloc(0), 32), thash())),
    ]);
    transcript.push(fin);
    const cAp = expandLabel(master, "c ap traffic", thash(), 32);
    sock.write(Buffer.concat([
      Buffer.from([0x16, 0x03, 0x03]),
      u16(sh.length),
      sh,
      Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]),
      seal(serverHsKeys, 0x16, Buffer.concat([ee, cert, cv, fin])),
    ]));

    // The client's answer: its Finished (it believed us), or an alert (it did not).
    const clientAp = trafficKeys(cAp);
    for (;;) {
      const rec = await reader.next();
      if (!rec) return out;
      if (rec.type === 0x14) continue;
      if (rec.type === 0x15) {
        out.alert = rec.body[1];
        return out;
      }
      if (rec.type !== 0x17) continue;
      const inner = open(out.clientFinished ? clientAp : clientHsKeys, rec.header, rec.body);
      if (inner.type === 0x15) {
        out.alert = inner.data[1];
        return out;
      }
      if (inner.type === 0x16 && inner.data[0] === 20) out.clientFinished = true;
      else if (inner.type === 0x17) out.request += inner.data.toString("utf8");
    }
  } finally {
    sock.destroy();
  }
}
