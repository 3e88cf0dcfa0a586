/**
 * The sandbox answers only requests addressed to it by an address or localhost: a web
 * page that points a name of its own at 127.0.0.1 (DNS rebinding) reads the sandbox as
 * its own origin, and what needs no key (the built-in inbox the README's walk-through
 * fills) would be the page's to read.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
withSandbox({ canary: false }, (started) => {
  sandbox = started;
});

/** A request to the sandbox with the Host header a browser would send for `host`. */
function request(method: string, path: string, host: string, body?: string, origin?: string): Promise<{ status: number; text: string }> {
  const { port } = new URL(sandbox.url);
  return new Promise((resolve, reject) => {
    const headers = { host, ...(origin !== undefined && { origin }) };
    const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('the Host a request names', () => {
  it('is answered when it is an address or localhost; a name rebound to 127.0.0.1 reads nothing of the inbox and adds nothing to it', async () => {
    const { port } = new URL(sandbox.url);
    const delivered = await request('POST', '/sandbox/inbox/demo', `127.0.0.1:${port}`, '{"events":[{"data":"private"}]}');
    expect(delivered.status).toBe(204);

    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `app.localhost:${port}`]) {
      const read = await request('GET', '/sandbox/inbox/demo', host);
      expect(read.status, host).toBe(200);
      expect(read.text, host).toContain('private');
    }

    for (const host of [`rebind.example.com:${port}`, `127.0.0.1.nip.io:${port}`, 'attacker.test']) {
      const read = await request('GET', '/sandbox/inbox/demo', host);
      expect(read.status, host).toBe(403);
      expect(JSON.parse(read.text).error.code, host).toBe('forbidden');
      expect(read.text, host).not.toContain('private');
      expect((await request('GET', '/sandbox/notifications', host)).status, host).toBe(403);
      expect((await request('POST', '/sandbox/inbox/demo', host, '{"forged":true}')).status, host).toBe(403);
    }
    const after = await request('GET', '/sandbox/inbox/demo', `127.0.0.1:${port}`);
    expect(JSON.parse(after.text).data).toHaveLength(1);
  });

  it("refuses a request a page of another site sends it (its Origin), which a browser sends without the page's reading the answer", async () => {
    const { port } = new URL(sandbox.url);
    const here = `127.0.0.1:${port}`;
    // A form on any site may POST to the sandbox by its address: the entry would be in the inbox as a delivery.
    for (const origin of ['https://attacker.example', 'http://203.0.113.5', 'null']) {
      const forged = await request('POST', '/sandbox/inbox/forms', here, 'forged=1', origin);
      expect(forged.status, origin).toBe(403);
    }
    for (const origin of [`http://127.0.0.1:${port}`, 'http://localhost:3000', `http://[::1]:${port}`]) {
      expect((await request('POST', '/sandbox/inbox/forms', here, '{"from":"a local page"}', origin)).status, origin).toBe(204);
    }
    const kept = JSON.parse((await request('GET', '/sandbox/inbox/forms', here)).text).data;
    expect(kept).toHaveLength(3);
    expect(JSON.stringify(kept)).not.toContain('forged');
  });
});
