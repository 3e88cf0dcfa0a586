/**
 * Which addresses a webhook may reach (SPEC §3 Webhooks): public unicast only.
 * Private, loopback, link-local, unique-local, metadata, multicast and reserved
 * addresses are refused, in every spelling an attacker might use (IPv4-mapped,
 * SIIT-translated, IPv4-compatible, NAT64 and 6to4 IPv6 forms are judged by
 * the IPv4 inside). Anything that does not parse is forbidden.
 */
import { isIP } from 'node:net';

export type AddressClass =
  | 'public'
  | 'private'
  | 'loopback'
  | 'link_local'
  | 'unique_local'
  | 'metadata'
  | 'unspecified'
  | 'multicast'
  | 'reserved';

type Range = readonly [base: bigint, prefix: number, cls: AddressClass];

function v4ToInt(ip: string): bigint | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
}

function v6ToInt(ip: string): bigint | undefined {
  let text = ip.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // A trailing dotted IPv4 (::ffff:1.2.3.4) becomes two 16-bit groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = v4ToInt(tail);
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - rest.length;
  if ((halves.length === 1 && missing !== 0) || missing < 0) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  if (groups.length !== 8 || !groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

const V4 = (cidr: string, cls: AddressClass): Range => {
  const [base, prefix] = cidr.split('/');
  return [v4ToInt(base as string) as bigint, Number(prefix), cls];
};
const V6 = (cidr: string, cls: AddressClass): Range => {
  const [base, prefix] = cidr.split('/');
  return [v6ToInt(base as string) as bigint, Number(prefix), cls];
};

// Most specific first: the first range that contains an address classifies it.
const V4_RANGES: readonly Range[] = [
  V4('169.254.169.254/32', 'metadata'),
  V4('169.254.170.2/32', 'metadata'),
  V4('255.255.255.255/32', 'reserved'),
  V4('0.0.0.0/8', 'unspecified'),
  V4('10.0.0.0/8', 'private'),
  V4('100.64.0.0/10', 'private'),
  V4('127.0.0.0/8', 'loopback'),
  V4('169.254.0.0/16', 'link_local'),
  V4('172.16.0.0/12', 'private'),
  V4('192.0.0.0/24', 'reserved'),
  V4('192.0.2.0/24', 'reserved'),
  V4('192.88.99.0/24', 'reserved'),
  V4('192.168.0.0/16', 'private'),
  V4('198.18.0.0/15', 'reserved'),
  V4('198.51.100.0/24', 'reserved'),
  V4('203.0.113.0/24', 'reserved'),
  V4('224.0.0.0/4', 'multicast'),
  V4('240.0.0.0/4', 'reserved'),
];

const V6_RANGES: readonly Range[] = [
  V6('fd00:ec2::254/128', 'metadata'),
  V6('::/128', 'unspecified'),
  V6('::1/128', 'loopback'),
  V6('fe80::/10', 'link_local'),
  V6('fec0::/10', 'reserved'),
  V6('fc00::/7', 'unique_local'),
  V6('ff00::/8', 'multicast'),
  V6('2001:db8::/32', 'reserved'),
  V6('100::/64', 'reserved'),
  V6('2001::/23', 'reserved'),
];

function inRange(value: bigint, bits: number, [base, prefix]: Range): boolean {
  const shift = BigInt(bits - prefix);
  return value >> shift === base >> shift;
}

function classifyV4(value: bigint): AddressClass {
  return V4_RANGES.find((range) => inRange(value, 32, range))?.[2] ?? 'public';
}

const MAPPED = v6ToInt('::ffff:0:0') as bigint;
const TRANSLATED = v6ToInt('::ffff:0:0:0') as bigint;
const NAT64 = v6ToInt('64:ff9b::') as bigint;
const SIX_TO_FOUR = v6ToInt('2002::') as bigint;

function classifyV6(value: bigint): AddressClass {
  const low32 = value & 0xffffffffn;
  // IPv4-mapped ::ffff:a.b.c.d, the SIIT-translated ::ffff:0:a.b.c.d and the
  // deprecated IPv4-compatible ::a.b.c.d all reach the IPv4 inside.
  if (value >> 32n === MAPPED >> 32n) return classifyV4(low32);
  if (value >> 32n === TRANSLATED >> 32n) return classifyV4(low32);
  if (value >> 32n === 0n && value > 1n) return classifyV4(low32);
  if (value >> 32n === NAT64 >> 32n) return classifyV4(low32);
  if (value >> 112n === SIX_TO_FOUR >> 112n) return classifyV4((value >> 80n) & 0xffffffffn);
  const special = V6_RANGES.find((range) => inRange(value, 128, range))?.[2];
  if (special) return special;
  // Only 2000::/3 is allocated as global unicast; anything else is not a public host.
  return value >> 125n === 1n ? 'public' : 'reserved';
}

/** Classifies an IP address; anything that does not parse is 'reserved', so forbidden. */
export function classifyAddress(ip: string): AddressClass {
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  if (isIP(bare) === 4) {
    const value = v4ToInt(bare);
    return value === undefined ? 'reserved' : classifyV4(value);
  }
  // A zone (fe80::1%eth0) only ever follows an IPv6 address.
  if (isIP(bare.split('%')[0] ?? '') === 6) {
    const value = v6ToInt(bare);
    return value === undefined ? 'reserved' : classifyV6(value);
  }
  return 'reserved';
}

export function isForbiddenAddress(ip: string): boolean {
  return classifyAddress(ip) !== 'public';
}

/**
 * What is wrong with a webhook URL before any DNS lookup, or undefined: https
 * only, and no literal forbidden address or localhost name (unless private
 * targets are allowed, as in the sandbox).
 */
export function checkTargetUrl(url: string, allowPrivate: boolean): string | undefined {
  if (allowPrivate) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'url must be an absolute URL';
  }
  if (parsed.protocol !== 'https:') return 'url must use https';
  // A trailing dot (localhost.) names the same host as without it.
  const host = parsed.hostname.toLowerCase().replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return 'url must not point at localhost';
  const literal = host.startsWith('[') ? host.slice(1, -1) : host;
  if (isIP(literal) !== 0 && isForbiddenAddress(literal))
    return `url must not point at a ${classifyAddress(literal).replace('_', '-')} address`;
  return undefined;
}
