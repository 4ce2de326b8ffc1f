/**
 * Peer trust: whether the certificate a peer presents is the person we mean. A peer is accepted when its
 * certificate verifies against our CA on trusted time, is not on the revocation list, names the user we
 * dialled (or, as listener, any user but us), and matches what we know of that user: the pinned key
 * once we have one (a different one is a key change: we warn and refuse until the user accepts it), else,
 * when dialling, the certificate the phonebook lists (first use is pinned then). A peer the user blocked is
 * refused (BLOCKED) whatever its certificate.
 *
 * Identity is the key, not the certificate: the pin is the SHA-256 of the certificate's SubjectPublicKeyInfo,
 * so a renewed certificate for the same key is accepted silently (and kept, replacing the older one).
 * Pins written by older versions hashed the whole certificate and nothing else was stored, so the key
 * behind such a pin can only be learnt from that very certificate: a legacy pin converts silently when the
 * peer presents it again, or when the phonebook still lists it (convertFromListing); a peer that renewed
 * before either happened cannot be told apart from a key change, and raises the alarm once.
 */
import { fingerprintOf, keyFingerprintOf, type VerifiedPeer, verifyPeerCertificate } from "../pki/mod.ts";
import type { HelloRole } from "./protocol/frames.ts";
import type { EngineEvent, PinState } from "./engine_types.ts";
import { EngineError } from "./engine_errors.ts";
import { SessionError } from "./session/errors.ts";
import type { StoredContact } from "./store/store.ts";

/** What peer trust keeps of contacts (ChatStore satisfies it). */
export interface PinStore {
  contact(name: string): StoredContact | null;
  /** Pins a key fingerprint. */
  pin(name: string, fingerprint: string): void;
  /** Turns a legacy certificate pin into the key pin of that certificate (verified mark kept). */
  convertPin(name: string, certificateFingerprint: string, keyFingerprint: string): void;
  saveCertificate(name: string, der: Uint8Array): void;
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

  /** Remembers the fingerprint the phonebook lists for `name` before we dial it; with the listed
   * certificate, an old certificate pin on it is converted (convertFromListing). */
  noteListed(name: string, fingerprint: string, certPem?: string): void {
    this.#listed.set(name, fingerprint);
    if (certPem !== undefined) this.convertFromListing(name, certPem);
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
    this.#convertLegacy(peer.name, peer.fingerprint, peer.keyFingerprint);
    const c = d.pins.contact(peer.name);
    if (c?.pinnedFingerprint && c.pinnedFingerprint !== peer.keyFingerprint) {
      if (c.pendingFingerprint !== peer.keyFingerprint) {
        d.pins.setPending(peer.name, peer.keyFingerprint);
        d.emit({
          event: "key-changed",
          name: peer.name,
          oldFingerprint: c.pinnedFingerprint,
          newFingerprint: peer.keyFingerprint,
        });
      }
      throw new SessionError("KEY_CHANGED", `${peer.name}'s key changed: accept the new key first`);
    }
    if (!c?.pinnedFingerprint) {
      const listed = this.#listed.get(peer.name);
      if (role === "dialer" && listed && listed !== peer.fingerprint) {
        throw new SessionError(
          "CERTIFICATE",
          `${peer.name} presents a certificate the phonebook does not list`,
        );
      }
      d.pins.pin(peer.name, peer.keyFingerprint);
    }
    // The same key (or the first): the certificate is kept, so a renewal replaces it without a word.
    d.pins.saveCertificate(peer.name, der);
    this.#verified.set(peer.name, peer);
    return peer;
  }

  /** A legacy pin that is the certificate fingerprint `certFp` becomes the key pin `keyFp`. */
  #convertLegacy(name: string, certFp: string, keyFp: string): void {
    const c = this.#d.pins.contact(name);
    if (c?.pinKind === "certificate" && c.pinnedFingerprint === certFp) {
      this.#d.pins.convertPin(name, certFp, keyFp);
    }
  }

  /** Converts a legacy pin from the certificate the phonebook lists for `name`, when it is the pinned one:
   * the pin (a hash of that certificate) authenticates the bytes, whoever served them. Returns whether the
   * pin is a key pin now. Bad PEM is ignored (nothing converts). */
  convertFromListing(name: string, certPem: string): boolean {
    try {
      this.#convertLegacy(name, fingerprintOf(certPem), keyFingerprintOf(certPem));
    } catch {
      // not a certificate: nothing to learn from it
    }
    return this.#d.pins.contact(name)?.pinKind === "key";
  }

  /** Names whose pin is still a legacy certificate pin (for a conversion pass over the phonebook). */
  legacyPins(names: readonly string[]): string[] {
    return names.filter((n) => this.#d.pins.contact(n)?.pinKind === "certificate");
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
