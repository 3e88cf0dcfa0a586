/**
 * Which `Host` the sandbox answers: an IP address, `localhost` (or a name under it), or
 * the host it was told to listen on. A web page the developer visits can point a name
 * of its own at 127.0.0.1 (DNS rebinding) and then read the sandbox as its own origin,
 * port and all: not the API (it has no key), but what needs none, the built-in inbox
 * (`/sandbox/inbox/demo`, the README's, holds every delivery sent to it) and the
 * notices. Such a request names the page's host, never an address: refused, it reads
 * nothing. In AWS, API Gateway answers only its own domains.
 */
import type { ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { errorBody } from '../functions/api/app.ts';

/** The message of the refusal: what to call the sandbox by instead. */
export const MISADDRESSED_MESSAGE =
  'The sandbox answers only requests addressed to an IP address, localhost or the host it listens on (the Host header), as http://127.0.0.1:<port>.';

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
  // The URL parser leaves the brackets on an IPv6 address and any one trailing dot on a name.
  const name = hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  if (isIP(name) !== 0) return true;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return name === listenHost.toLowerCase().replace(/\.$/, '');
}

/** Answers a request addressed to another host: 403, in the API's error shape. */
export function answerMisaddressed(res: ServerResponse): void {
  res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify(errorBody('forbidden', MISADDRESSED_MESSAGE)));
}
