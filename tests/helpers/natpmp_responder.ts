/**
 * A small NAT-PMP server (RFC 6886) for a lab router (tests/helpers/netlab.ts), because Debian's miniupnpd
 * refuses every mapping when the router's outside address is a reserved one, which every lab range is. It
 * answers "external address" (opcode 0) and TCP mappings (opcode 2): a mapping is a real nftables DNAT rule
 * in the router's `lab` table (removed again for a lifetime of 0), so a peer's connection to the router's
 * WAN port really reaches the host. Runs inside the router's namespace:
 *   deno run --allow-net --allow-run natpmp_responder.ts LAN_ADDRESS WAN_ADDRESS
 * and prints `ready`, then `MAP ext -> host:port` and `UNMAP ext` as it works (the tests read them).
 */
import dgram from "node:dgram";

const [lan, wan] = Deno.args;
const started = Date.now();
/** External port -> the nft rule's handle. */
const rules = new Map<number, number>();

async function nft(args: string[]): Promise<string> {
  const out = await new Deno.Command("nft", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

const sock = dgram.createSocket("udp4");
sock.on("message", async (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
  const b = Buffer.from(msg);
  if (b.length < 2 || b[0] !== 0) return;
  const op = b[1];
  const epoch = Math.floor((Date.now() - started) / 1000);
  if (op === 0) {
    const r = Buffer.alloc(12);
    r.writeUInt8(0, 0);
    r.writeUInt8(128, 1);
    r.writeUInt16BE(0, 2);
    r.writeUInt32BE(epoch, 4);
    wan.split(".").forEach((o, i) => r.writeUInt8(Number(o), 8 + i));
    sock.send(r, rinfo.port, rinfo.address);
    return;
  }
  if (b.length < 12) return;
  const internal = b.readUInt16BE(4);
  let external = b.readUInt16BE(6) || internal;
  const lifetime = b.readUInt32BE(8);
  let result = 0;
  try {
    if (op !== 2) result = 5; // only TCP here
    else if (lifetime === 0) {
      for (const [ext, handle] of [...rules]) {
        if (ext === external || external === 0) {
          await nft(["delete", "rule", "ip", "lab", "pre", "handle", String(handle)]);
          rules.delete(ext);
          console.log(`UNMAP ${ext}`);
        }
      }
    } else if (!rules.has(external)) {
      const out = await nft([
        "--echo",
        "--handle",
        "add",
        "rule",
        "ip",
        "lab",
        "pre",
        "iifname",
        "wan",
        "tcp",
        "dport",
        String(external),
        "dnat",
        "to",
        `${rinfo.address}:${internal}`,
      ]);
      rules.set(external, Number(/# handle (\d+)/.exec(out)![1]));
      console.log(`MAP ${external} -> ${rinfo.address}:${internal}`);
    }
  } catch (e) {
    console.error(String(e));
    result = 3; // network failure
    external = 0;
  }
  const r = Buffer.alloc(16);
  r.writeUInt8(0, 0);
  r.writeUInt8(128 + op, 1);
  r.writeUInt16BE(result, 2);
  r.writeUInt32BE(epoch, 4);
  r.writeUInt16BE(internal, 8);
  r.writeUInt16BE(lifetime === 0 ? 0 : external, 10);
  r.writeUInt32BE(lifetime, 12);
  sock.send(r, rinfo.port, rinfo.address);
});
sock.bind(5351, lan, () => console.log("ready"));
