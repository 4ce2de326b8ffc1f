/**
 * `securechat relay`: the relay on a machine of its own. It holds no CA key and no directory: it judges a
 * user's certificate by the CA's signature, its validity on the local clock, and the phonebook's CRL
 * (fetched over HTTPS from the phonebook, its signature checked against the CA, refreshed every minute;
 * until one was obtained every user is refused, so a revoked or superseded certificate never gets in).
 * Its own certificate comes from `securechat serve relay-cert` on the phonebook's machine.
 */
import { type ParsedCrl, verifyCrl, verifyPeerCertificate } from "../pki/mod.ts";
import { type RelayLimits, type RunningRelay, startRelay } from "./relay.ts";

export interface StandaloneRelayOptions {
  certPem: string;
  keyPem: string;
  caPem: string;
  /** https://HOST:PORT of the phonebook whose CRL is followed. */
  phonebook: string;
  hostname: string;
  port: number;
  limits?: Partial<RelayLimits>;
  /** Default 60 s. */
  crlRefreshMs?: number;
  onForward?: (chunk: Uint8Array) => void;
  log?: (text: string) => void;
}

export async function startStandaloneRelay(opts: StandaloneRelayOptions): Promise<RunningRelay> {
  const client = Deno.createHttpClient({ caCerts: [opts.caPem] });
  let crl: ParsedCrl | null = null;
  const refresh = async () => {
    try {
      // The list's signature is what is trusted (checked against the CA below), not the connection.
      const init: RequestInit & { client: Deno.HttpClient } = { client, signal: AbortSignal.timeout(10_000) };
      const res = await fetch(`${opts.phonebook.replace(/\/+$/, "")}/v1/crl`, init);
      if (!res.ok) throw new Error(`the phonebook answered ${res.status}`);
      const next = await verifyCrl(new Uint8Array(await res.arrayBuffer()), opts.caPem);
      // Never back to an older list (a replayed one would forget revocations).
      if (!crl || (next.crlNumber ?? 0n) >= (crl.crlNumber ?? 0n)) crl = next;
    } catch (e) {
      opts.log?.(`cannot fetch the revocation list: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  await refresh();
  const timer = setInterval(() => void refresh(), opts.crlRefreshMs ?? 60_000);
  let relay: RunningRelay;
  try {
    relay = await startRelay({
      certPem: opts.certPem,
      keyPem: opts.keyPem,
      caPem: opts.caPem,
      hostname: opts.hostname,
      port: opts.port,
      limits: opts.limits,
      onForward: opts.onForward,
      authenticate: async (certDer) => {
        const list = crl;
        if (!list) throw new Error("no revocation list yet");
        const now = Date.now();
        return await verifyPeerCertificate({
          certDer,
          caCertPem: opts.caPem,
          time: { earliestMs: now, latestMs: now },
          revokedSerials: list.revokedSerials,
        });
      },
    });
  } catch (e) {
    clearInterval(timer);
    client.close();
    throw e;
  }
  return {
    ...relay,
    close: async () => {
      clearInterval(timer);
      client.close();
      await relay.close();
    },
  };
}
