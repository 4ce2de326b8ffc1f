/**
 * Peer trust: whether the certificate a peer presents is the person we mean. A peer is accepted when its
 * certificate verifies against our CA on trusted time, is not on the revocation list, names the user we
 * dialled (or, as listener, any user but us), and matches what we know of that user: the pinned fingerprint
 * once we have one (a different one is a key change: we warn and refuse until the user accepts it), else,
 * when dialling, the fingerprint the phonebook lists (first use is pinned then). A peer the user blocked is
 * refused (BLOCKED) whatever its certificate.
 */
import { type VerifiedPeer, verifyPeerCertificate } from "../pki/mod.ts";
import type { HelloRole } from "./protocol/frames.ts";
import type { EngineEvent, PinState } from "./engine_types.ts";
import { EngineError } from "./engine_errors.ts";
import { SessionError } from "./session/errors.ts";
import type { StoredContact } from "./store/store.ts";

/** What peer trust keeps of contacts (ChatStore satisfies it). */
export interface PinStore {
  contact(name: string): StoredContact | null;
  pin(name: string, fingerprint: string): void;
  setPending(name: string, fingerprint: string | null): void;
  setVerified(name: string, verified: boolean): void;
}

export interface PeerTrustDeps {
  ownName: string;
  caPem: string;
  /** The interval certificate validity is judged on. */
  certTime(): { earliestMs: number; latestMs: number };
  /** Throws (RevocationUnknownError) when no list was ever obtained: the peer is then refused. */
  revokedSerials(): Promise<ReadonlySet<string>>;
  pins: PinStore;
  emit(e: EngineEvent): void;
  /** Names the user blocked (blocklist.ts): refused with SessionError BLOCKED before any pin is taken. */
  isBlocked?(name: string): boolean;
}

export class PeerTrust {
  readonly #d: PeerTrustDeps;
  /** The last certificate each peer proved, for the peer pane. */
  readonly #verified = new Map<string, VerifiedPeer>();
  /** What the phonebook listed for each user we looked up (checked on first contact when dialling). */
  readonly #listed = new Map<string, string>();

  constructor(deps: PeerTrustDeps) {
    this.#d = deps;
  }

  /** Remembers the fingerprint the phonebook lists for `name` before we dial it. */
  noteListed(name: string, fingerprint: string): void {
    this.#listed.set(name, fingerprint);
  }

  /** The certificate `name` last proved in a session, or null. */
  verified(name: string): VerifiedPeer | null {
    return this.#verified.get(name) ?? null;
  }

  /** Judges a peer certificate (the SessionManager's Authenticate). Throws CertificateError or SessionError
   * (CERTIFICATE, KEY_CHANGED) to refuse. */
  async authenticate(der: Uint8Array, expectedName: string | null, role: HelloRole): Promise<VerifiedPeer> {
    const d = this.#d;
    const peer = await verifyPeerCertificate({
      certDer: der,
      caCertPem: d.caPem,
      expectedName: expectedName ?? undefined,
      time: d.certTime(),
      revokedSerials: await d.revokedSerials(),
    });
    if (peer.name === d.ownName) throw new SessionError("CERTIFICATE", "peer presents our own name");
    if (d.isBlocked?.(peer.name)) throw new SessionError("BLOCKED", `${peer.name} is blocked`);
    const c = d.pins.contact(peer.name);
    if (c?.pinnedFingerprint && c.pinnedFingerprint !== peer.fingerprint) {
      if (c.pendingFingerprint !== peer.fingerprint) {
        d.pins.setPending(peer.name, peer.fingerprint);
        d.emit({
          event: "key-changed",
          name: peer.name,
          oldFingerprint: c.pinnedFingerprint,
          newFingerprint: peer.fingerprint,
        });
      }
      throw new SessionError("KEY_CHANGED", `${peer.name}'s certificate changed: accept the new key first`);
    }
    if (!c?.pinnedFingerprint) {
      const listed = this.#listed.get(peer.name);
      if (role === "dialer" && listed && listed !== peer.fingerprint) {
        throw new SessionError(
          "CERTIFICATE",
          `${peer.name} presents a certificate the phonebook does not list`,
        );
      }
      d.pins.pin(peer.name, peer.fingerprint);
    }
    this.#verified.set(peer.name, peer);
    return peer;
  }

  pinState(name: string): PinState {
    const c = this.#d.pins.contact(name);
    if (!c || !c.pinnedFingerprint) return "first-use";
    if (c.pendingFingerprint) return "changed";
    return c.verified ? "verified" : "pinned";
  }

  pinnedFingerprint(name: string): string | null {
    return this.#d.pins.contact(name)?.pinnedFingerprint ?? null;
  }

  /** Pins the changed key waiting for `name`. Throws EngineError NO_PENDING_KEY when there is none. */
  acceptKey(name: string): void {
    const c = this.#d.pins.contact(name);
    if (!c?.pendingFingerprint) throw new EngineError("NO_PENDING_KEY", `no changed key waiting for ${name}`);
    this.#d.pins.pin(name, c.pendingFingerprint);
  }

  /** Records that the user compared fingerprints out of band. Throws EngineError NOT_FOUND with no pin. */
  markVerified(name: string): void {
    const c = this.#d.pins.contact(name);
    if (!c?.pinnedFingerprint) throw new EngineError("NOT_FOUND", `no key pinned for ${name}`);
    this.#d.pins.setVerified(name, true);
  }
}
