/**
 * A real DNS server on a loopback UDP port, answering A and AAAA queries from a zone
 * the test gives: a name's addresses, 'hang' for a nameserver that never answers,
 * or nothing for a name that does not exist (NXDOMAIN). Answers carry a TTL of 0,
 * as a rebinding attacker's do, so nothing is kept between lookups. Point a
 * `dns.promises.Resolver` at it with `setServers([server.address])`.
 */
import dgram from 'node:dgram';
import { isIP } from 'node:net';

/** A name's addresses of each type, or 'hang' for a type its nameserver never answers. */
export interface DnsRecords {
  readonly A?: readonly string[] | 'hang';
  readonly AAAA?: readonly string[] | 'hang';
}

/** A name's records, 'hang' to never answer it, undefined for no such name. */
export type DnsZone = (name: string) => DnsRecords | 'hang' | undefined;

export interface DnsServer {
  /** `127.0.0.1:port`, for `Resolver.setServers`. */
  readonly address: string;
  /** How many queries (of either type) came for a name, or for any name. */
  queries(name?: string): number;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;
const NXDOMAIN = 3;

function v4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

/** The 16 bytes of an IPv6 address, a dotted IPv4 tail (::ffff:127.0.0.1) included. */
function v6Bytes(ip: string): Buffer {
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = v4Bytes(tail);
    text = `${text.slice(0, lastColon + 1)}${(((a as number) << 8) | (b as number)).toString(16)}:${(((c as number) << 8) | (d as number)).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest ? rest.split(':') : [];
  const groups = [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups];
  const bytes = Buffer.alloc(16);
  for (const [i, group] of groups.entries()) bytes.writeUInt16BE(Number.parseInt(group, 16), i * 2);
  return bytes;
}

/** The question's name, type and where the question section ends. */
function readQuestion(query: Buffer): { name: string; type: number; end: number } {
  const labels: string[] = [];
  let at = 12;
  for (let length = query[at] as number; length > 0; length = query[at] as number) {
    labels.push(query.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += 1 + length;
  }
  return { name: labels.join('.').toLowerCase(), type: query.readUInt16BE(at + 1), end: at + 5 };
}

function answer(query: Buffer, zone: DnsZone): { name: string; reply: Buffer | undefined } {
  const { name, type, end } = readQuestion(query);
  const records = zone(name);
  if (records === 'hang') return { name, reply: undefined };
  const asked = type === TYPE_A ? records?.A : type === TYPE_AAAA ? records?.AAAA : undefined;
  if (asked === 'hang') return { name, reply: undefined };
  const addresses = asked ?? [];
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  // A response (QR), authoritative (AA), recursion desired as asked and available; NXDOMAIN for an unknown name.
  header.writeUInt16BE(0x8000 | 0x0400 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | (records ? 0 : NXDOMAIN), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(addresses.length, 6);
  const answers = addresses.map((address) => {
    const data = isIP(address) === 4 ? v4Bytes(address) : v6Bytes(address);
    const record = Buffer.alloc(12);
    // The name as a pointer to the question's (offset 12), its type, class IN, TTL 0.
    record.writeUInt16BE(0xc00c, 0);
    record.writeUInt16BE(type, 2);
    record.writeUInt16BE(1, 4);
    record.writeUInt32BE(0, 6);
    record.writeUInt16BE(data.length, 10);
    return Buffer.concat([record, data]);
  });
  return { name, reply: Buffer.concat([header, query.subarray(12, end), ...answers]) };
}

export async function startDnsServer(zone: DnsZone): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const counts = new Map<string, number>();
  socket.on('message', (query, from) => {
    const { name, reply } = answer(query, zone);
    counts.set(name, (counts.get(name) ?? 0) + 1);
    if (reply) socket.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${socket.address().port}`,
    queries: (name) => (name === undefined ? [...counts.values()].reduce((a, b) => a + b, 0) : (counts.get(name.toLowerCase()) ?? 0)),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
