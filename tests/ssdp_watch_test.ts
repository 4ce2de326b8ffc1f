/**
 * A UPnP router's restart heard from its SSDP NOTIFYs (client/ssdp_watch.ts): the NOTIFY as miniupnpd 2.3.1
 * sends it (bytes from a packet capture in the lab), what is not one, the boot rules (a BOOTID that changed,
 * or an alive after a byebye from a device without one), the answer to a search, and the listener over IPv6
 * loopback: only our router's NOTIFYs count, and the search at start gives the boot a power cut is compared
 * with. tests/reach_pinhole_test.ts hears a real miniupnpd restart in the network lab.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  BootTracker,
  type Notify,
  parseNotify,
  parseSearchAnswer,
  watchRouterRestarts,
} from "../client/ssdp_watch.ts";

const enc = (s: string) => new TextEncoder().encode(s.replaceAll("\n", "\r\n"));

/** miniupnpd's alive for its root device, as captured (its BOOTID is its start time). */
const MINIUPNPD_ALIVE = `NOTIFY * HTTP/1.1
HOST: 239.255.255.250:1900
CACHE-CONTROL: max-age=60
LOCATION: http://192.168.1.1:5000/rootDesc.xml
NT: upnp:rootdevice
USN: uuid:5ecc4a70-0000-4000-8000-00000000ab1e::upnp:rootdevice
NTS: ssdp:alive
SERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1
BOOTID.UPNP.ORG: 1796309458
CONFIGID.UPNP.ORG: 1337

`;

/** The answer to a search, as miniupnpd gives it. */
function answer(uuid: string, bootId: number): string {
  return `HTTP/1.1 200 OK\nCACHE-CONTROL: max-age=60\nST: upnp:rootdevice\nUSN: uuid:${uuid}::upnp:rootdevice\n` +
    `EXT:\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\nLOCATION: http://[fe80::1]:5000/rootDesc.xml\n` +
    `BOOTID.UPNP.ORG: ${bootId}\n\n`;
}

function notify(nts: string, uuid: string, bootId?: number | string): Uint8Array {
  return enc(
    `NOTIFY * HTTP/1.1\nHOST: [ff02::c]:1900\nNT: upnp:rootdevice\nUSN: uuid:${uuid}::upnp:rootdevice\n` +
      `NTS: ${nts}\n${bootId === undefined ? "" : `BOOTID.UPNP.ORG: ${bootId}\n`}\n`,
  );
}

Deno.test("ssdp: a NOTIFY is read for its kind, its device and its boot; anything else is not one", () => {
  assert.deepEqual(parseNotify(enc(MINIUPNPD_ALIVE)), {
    nts: "ssdp:alive",
    uuid: "5ecc4a70-0000-4000-8000-00000000ab1e",
    bootId: 1796309458,
  });
  assert.deepEqual(parseNotify(notify("ssdp:byebye", "AB-1", 7)), {
    nts: "ssdp:byebye",
    uuid: "ab-1",
    bootId: 7,
  });
  assert.deepEqual(parseNotify(notify("ssdp:alive", "ab-1")), {
    nts: "ssdp:alive",
    uuid: "ab-1",
    bootId: null,
  });
  assert.equal(parseNotify(notify("ssdp:alive", "ab-1", "soon"))?.bootId, null, "a BOOTID that is no number");
  assert.equal(parseNotify(notify("ssdp:alive", "ab-1", 2 ** 31))?.bootId, null, "above UDA's range");
  assert.equal(parseNotify(notify("ssdp:update", "ab-1", 7)), null, "ssdp:update is no boot");
  assert.equal(parseNotify(enc(MINIUPNPD_ALIVE.replace("NOTIFY *", "M-SEARCH *"))), null, "a search");
  assert.equal(
    parseNotify(enc("HTTP/1.1 200 OK\nUSN: uuid:ab-1\nBOOTID.UPNP.ORG: 1\n\n")),
    null,
    "an answer",
  );
  // The answer to a search says the device is up, with its boot now.
  assert.deepEqual(parseSearchAnswer(enc(answer("ab-1", 1))), { nts: "ssdp:alive", uuid: "ab-1", bootId: 1 });
  assert.equal(parseSearchAnswer(enc(MINIUPNPD_ALIVE)), null, "a NOTIFY is no answer");
  assert.equal(parseSearchAnswer(enc("HTTP/1.1 404 Not Found\nUSN: uuid:ab-1\n\n")), null);
  assert.equal(parseNotify(enc(MINIUPNPD_ALIVE.replace(/USN: .*\n/, ""))), null, "no USN");
  assert.equal(parseNotify(enc(MINIUPNPD_ALIVE.replace("USN: uuid:", "USN: "))), null, "a USN with no uuid");
  assert.equal(parseNotify(new Uint8Array(5000).fill(65)), null, "too long to be one");
  assert.equal(parseNotify(new Uint8Array(0)), null);
});

Deno.test("ssdp: a restart is a BOOTID that changed, or an alive after a byebye from a device without one", () => {
  const t = new BootTracker();
  const n = (nts: Notify["nts"], uuid: string, bootId: number | null): Notify => ({ nts, uuid, bootId });
  assert.equal(t.note(n("ssdp:alive", "a", 10)), false, "the first heard only sets what is compared");
  assert.equal(t.note(n("ssdp:alive", "a", 10)), false, "the periodic repeat");
  assert.equal(t.note(n("ssdp:alive", "b", 99)), false, "another device's first");
  assert.equal(t.note(n("ssdp:alive", "a", 11)), true, "a new boot");
  assert.equal(t.note(n("ssdp:alive", "a", 11)), false, "its repeats");
  // Stopped and started again: a byebye with the old boot, then an alive with the new one.
  assert.equal(t.note(n("ssdp:byebye", "a", 11)), false);
  assert.equal(t.note(n("ssdp:alive", "a", 12)), true);
  // A byebye is the first we hear of a device: its boot is known from it.
  assert.equal(t.note(n("ssdp:byebye", "c", 5)), false);
  assert.equal(t.note(n("ssdp:alive", "c", 6)), true);
  // Without BOOTID (UDA 1.0): only an alive after a byebye tells.
  assert.equal(t.note(n("ssdp:alive", "d", null)), false);
  assert.equal(t.note(n("ssdp:alive", "d", null)), false);
  assert.equal(t.note(n("ssdp:byebye", "d", null)), false);
  assert.equal(t.note(n("ssdp:alive", "d", null)), true);
  assert.equal(t.note(n("ssdp:alive", "d", null)), false);
});

/** A free UDP port on IPv6 loopback (taken and given back). */
async function freePort(): Promise<number> {
  const s = dgram.createSocket("udp6");
  await new Promise<void>((r) => s.bind(0, "::1", () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

Deno.test("ssdp: the listener says a restart of our router once, and ignores NOTIFYs from elsewhere", async () => {
  const port = await freePort();
  const restarts: string[] = [];
  let ours = true;
  const watch = await watchRouterRestarts({
    isOurRouter: (a) => ours && a === "::1",
    onRestart: (why) => restarts.push(why),
    port,
    families: ["ipv6"],
    searchTo: null,
  });
  const router = dgram.createSocket("udp6");
  await new Promise<void>((r) => router.bind(0, "::1", () => r()));
  const send = async (b: Uint8Array) => {
    router.send(b, port, "::1");
    await new Promise((r) => setTimeout(r, 100));
  };
  try {
    await send(notify("ssdp:alive", "r", 1));
    await send(notify("ssdp:alive", "r", 1));
    assert.deepEqual(restarts, []);
    ours = false;
    await send(notify("ssdp:alive", "r", 2));
    assert.deepEqual(restarts, [], "a NOTIFY not from our router");
    ours = true;
    await send(notify("ssdp:alive", "r", 3));
    assert.deepEqual(restarts, ["UPnP NOTIFY from ::1, boot 3"]);
    await send(enc("M-SEARCH * HTTP/1.1\nST: ssdp:all\n\n"));
    await send(notify("ssdp:alive", "r", 3));
    assert.equal(restarts.length, 1);
  } finally {
    watch.close();
    router.close();
  }
});

Deno.test("ssdp: the search at start learns the router's boot, so a restart without byebye (a power cut) is noticed", async () => {
  const port = await freePort();
  const restarts: string[] = [];
  // The router: answers a search with its boot, 41.
  const router = dgram.createSocket("udp6");
  const searches: string[] = [];
  router.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const text = new TextDecoder().decode(msg);
    searches.push(text);
    if (text.startsWith("M-SEARCH * HTTP/1.1\r\n")) {
      router.send(enc(answer("r", 41)), from.port, from.address);
    }
  });
  await new Promise<void>((r) => router.bind(0, "::1", () => r()));
  const watch = await watchRouterRestarts({
    isOurRouter: (a) => a === "::1",
    onRestart: (why) => restarts.push(why),
    port,
    families: ["ipv6"],
    searchTo: { address: "::1", port: router.address().port },
  });
  try {
    for (let i = 0; searches.length === 0; i++) {
      assert.ok(i < 50, "no search came");
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(searches[0], /\r\nMAN: "ssdp:discover"\r\n/);
    assert.match(searches[0], /\r\nST: upnp:rootdevice\r\n/);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(restarts, [], "the answer only sets the boot");
    // It lost power and came back: no byebye, only its first alive with the next boot.
    router.send(notify("ssdp:alive", "r", 42), port, "::1");
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(restarts, ["UPnP NOTIFY from ::1, boot 42"]);
  } finally {
    watch.close();
    router.close();
  }
});
