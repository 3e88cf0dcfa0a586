/**
 * Which requests the sandbox answers, by the `Host` they name and the `Origin` a browser
 * sends them from. A web page the developer visits can point a name of its own at
 * 127.0.0.1 (DNS rebinding) and then read the sandbox as its own origin, port and all:
 * not the API (it has no key), but what needs none, the built-in inbox
 * (`/sandbox/inbox/demo`, the README's, holds every delivery sent to it) and the
 * notices. Such a request names the page's host, never an address: refused, it reads
 * nothing. And any page may have the browser send the sandbox a form (a POST it cannot
 * read the answer of, which the inbox would keep as a delivery): its Origin names the
 * page's site, refused unless that is this machine. In AWS, API Gateway answers only
 * its own domains, and its API takes nothing without a key in a header.
 */
import type { ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { errorBody } from '../functions/api/app.ts';
import { classifyAddress } from '../functions/core/ssrf.ts';

/** The message of the refusal: what to call the sandbox by instead. */
export const MISADDRESSED_MESSAGE =
  'The sandbox answers only requests addressed to an IP address, localhost or the host it listens on (the Host header), as http://127.0.0.1:<port>, and sent from no web page, or one of this machine (the Origin header).';

/**
 * Whether a request whose `Host` header is `header` is addressed to this sandbox,
 * which listens on `listenHost`. A request with no Host (HTTP/1.0) names no other host:
 * a browser always sends one.
 */
export function addressedHere(header: string | undefined, listenHost: string): boolean {
  if (header === undefined) return true;
  let hostname: string;
  try {
    hostname = new URL(`http://${header}`).hostname;
  } catch {
    return false;
  }
  const name = bareName(hostname);
  return isIP(name) !== 0 || isLocalName(name, listenHost);
}

/**
 * Whether a request whose `Origin` header is `header` comes from no web page (curl, an
 * SDK, the sandbox's own calls send none) or from a page of this machine: a loopback
 * address, localhost or the host the sandbox listens on. Not any address, as for Host:
 * a page served from a public address is another site.
 */
export function sentFromHere(header: string | undefined, listenHost: string): boolean {
  if (header === undefined) return true;
  // `null`: a page with no origin of its own (a file, a sandboxed frame), any page's.
  if (!URL.canParse(header)) return false;
  const name = bareName(new URL(header).hostname);
  return (isIP(name) !== 0 && classifyAddress(name) === 'loopback') || isLocalName(name, listenHost);
}

/** A URL's hostname without the brackets the URL parser leaves on an IPv6 address, or one trailing dot. */
function bareName(hostname: string): string {
  return hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
}

function isLocalName(name: string, listenHost: string): boolean {
  return name === 'localhost' || name.endsWith('.localhost') || name === listenHost.toLowerCase().replace(/\.$/, '');
}

/** Answers a request addressed to another host: 403, in the API's error shape. */
export function answerMisaddressed(res: ServerResponse): void {
  res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify(errorBody('forbidden', MISADDRESSED_MESSAGE)));
}
