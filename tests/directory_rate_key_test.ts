/**
 * Whom the rate limiter counts as one source. One IPv6 host usually holds a whole /64 and can send every
 * request from a fresh address, so IPv6 is counted per /64; an IPv4 client seen through a dual-stack socket
 * (::ffff:a.b.c.d) is the same source as a.b.c.d.
 */
import assert from "node:assert/strict";
import { RateLimiter, rateLimitKey } from "../server/rate_limit.ts";

Deno.test("rateLimitKey: IPv6 per /64, IPv4-mapped as IPv4, IPv4 per address", () => {
  assert.equal(rateLimitKey("2001:db8:1:2::1"), rateLimitKey("2001:DB8:1:2:ffff:ffff:ffff:ffff"));
  assert.equal(rateLimitKey("2001:db8:1:2::1"), rateLimitKey("2001:0db8:0001:0002:0:0:0:9"));
  assert.notEqual(rateLimitKey("2001:db8:1:2::1"), rateLimitKey("2001:db8:1:3::1"));
  assert.equal(rateLimitKey("::ffff:10.0.0.1"), rateLimitKey("10.0.0.1"));
  assert.equal(rateLimitKey("::ffff:a00:1"), rateLimitKey("10.0.0.1"));
  assert.notEqual(rateLimitKey("10.0.0.1"), rateLimitKey("10.0.0.2"));
  assert.equal(rateLimitKey("::1"), rateLimitKey("::2"), "the same /64");
  assert.equal(rateLimitKey("fe80::1%eth0"), rateLimitKey("fe80::2%eth1"));
  assert.equal(rateLimitKey("not an address"), "not an address");
});

Deno.test("rate limiting holds against one IPv6 host rotating through its /64", () => {
  const rl = new RateLimiter(1, 5);
  let refused = 0;
  for (let i = 1; i <= 50; i++) {
    if (rl.take(rateLimitKey(`2001:db8:aa:bb::${i.toString(16)}`), 1, 0) > 0) refused++;
  }
  assert.equal(refused, 45, "5 allowed by the burst, the rest refused");
  assert.equal(rl.size, 1, "one bucket for the whole /64");
});
