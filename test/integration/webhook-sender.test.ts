/**
 * The sender keeps connections open between deliveries, against real local
 * servers: one connection carries many deliveries, a kept connection that the
 * subscriber closed while it sat idle costs no failed attempt, and a connection
 * whose answer was cut short is not kept.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { makeSender } from '../../functions/adapters/webhook-sender.ts';

const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** Listens on a free loopback port; closed after the test, with the connections the sender keeps. */
async function listen(server: net.Server): Promise<string> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  );
  const { port } = server.address() as net.AddressInfo;
  return `http://127.0.0.1:${port}/hook`;
}

const request = (url: string) => ({ url, headers: { 'content-type': 'application/json' }, body: '{"n":1}', timeoutMs: 2_000 });

/**
 * A raw HTTP server that answers the first request on each connection and kept
 * open, then resets the connection when another request comes on it: what a
 * subscriber that closed an idle connection just as it was reused looks like.
 */
function oneRequestPerConnection(): { server: net.Server; connections: number; requests: number } {
  const state = { server: net.createServer(), connections: 0, requests: 0 };
  state.server.on('connection', (socket) => {
    state.connections++;
    let answered = 0;
    eachRequest(socket, () => {
      state.requests++;
      if (answered++ > 0) {
        socket.resetAndDestroy();
        return false;
      }
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
      return true;
    });
  });
  return state;
}

/** Calls `handle` for each whole request that comes on a raw connection (bodies by Content-Length); `false` reads no more. */
function eachRequest(socket: net.Socket, handle: () => boolean): void {
  let buffered = '';
  socket.on('data', (chunk) => {
    buffered += chunk.toString('latin1');
    for (;;) {
      const headEnd = buffered.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const length = Number(/content-length: *(\d+)/i.exec(buffered.slice(0, headEnd))?.[1] ?? 0);
      if (buffered.length < headEnd + 4 + length) return;
      buffered = buffered.slice(headEnd + 4 + length);
      if (!handle()) return;
    }
  });
}

/** An HTTP server that answers every request 200 with `body`, counting the connections made to it. */
async function answering(body: string): Promise<{ url: string; connections: number }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(body));
  });
  const subscriber = { url: '', connections: 0 };
  server.on('connection', () => subscriber.connections++);
  subscriber.url = await listen(server);
  return subscriber;
}

describe('webhook sender connections', () => {
  it('sends deliveries to one host and port over one kept connection', async () => {
    const subscriber = await answering('ok');
    const send = makeSender({ allowPrivateTargets: true });

    const results = [];
    for (let i = 0; i < 3; i++) results.push(await send(request(subscriber.url)));

    expect(results.map((r) => [r.statusCode, r.responseSnippet])).toEqual([
      [200, 'ok'],
      [200, 'ok'],
      [200, 'ok'],
    ]);
    expect(subscriber.connections).toBe(1);
  });

  it('connects afresh after a pause as long as the idle limit, when timers may not have run (a frozen Lambda)', async () => {
    const subscriber = await answering('ok');
    let clock = 1_000_000;
    const send = makeSender({ allowPrivateTargets: true, now: () => clock });

    await send(request(subscriber.url));
    clock += 3_000;
    await send(request(subscriber.url));
    expect(subscriber.connections).toBe(1);
    // The environment was frozen: the clock moved on, the kept connection's timer did not fire.
    clock += 4_000;
    const late = await send(request(subscriber.url));

    expect(late).toMatchObject({ statusCode: 200, error: undefined });
    expect(subscriber.connections).toBe(2);
  });

  it('posts again on a new connection when the subscriber reset a kept one, and the attempt succeeds', async () => {
    const subscriber = oneRequestPerConnection();
    const url = await listen(subscriber.server);
    const send = makeSender({ allowPrivateTargets: true });

    const first = await send(request(url));
    const second = await send(request(url));

    expect(first).toMatchObject({ statusCode: 200, error: undefined });
    expect(second).toMatchObject({ statusCode: 200, error: undefined, responseSnippet: 'ok' });
    // The second delivery went on the kept connection, was reset, and went again on a new one.
    expect(subscriber.requests).toBe(3);
    expect(subscriber.connections).toBe(2);
  });

  it('closes a connection whose answer was longer than it reads, rather than keeping it', async () => {
    const subscriber = await answering('x'.repeat(64 * 1024));
    const send = makeSender({ allowPrivateTargets: true });

    const first = await send(request(subscriber.url));
    const second = await send(request(subscriber.url));

    expect(first.statusCode).toBe(200);
    expect(first.responseSnippet).toBe('x'.repeat(200));
    expect(second.statusCode).toBe(200);
    expect(subscriber.connections).toBe(2);
  });
});

describe('webhook sender timeouts', () => {
  it('takes a status sent in time for the answer, though the body after it is still coming at the timeout', async () => {
    // 200 and the first bytes of its body at once; the rest never comes.
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-length': '100' });
        res.write('ab');
      });
    });
    const url = await listen(server);
    const send = makeSender({ allowPrivateTargets: true });
    const result = await send({ ...request(url), timeoutMs: 500 });
    expect(result).toMatchObject({ statusCode: 200, error: undefined, responseSnippet: 'ab' });
  });

  it('reports no answer when not even the status came within the timeout', async () => {
    const server = http.createServer((req) => req.resume());
    const url = await listen(server);
    const send = makeSender({ allowPrivateTargets: true });
    const result = await send({ ...request(url), timeoutMs: 300 });
    expect(result).toMatchObject({ statusCode: undefined, error: 'no answer within 300 ms' });
  });
});

/** A raw server that calls `answer` with the socket once each whole request has been read. */
function rawAnswering(answer: (socket: net.Socket) => void): { server: net.Server; requests: number } {
  const state = { server: net.createServer(), requests: 0 };
  state.server.on('connection', (socket) => {
    socket.on('error', () => {});
    eachRequest(socket, () => {
      state.requests++;
      answer(socket);
      return true;
    });
  });
  return state;
}

describe('webhook sender answers that break', () => {
  it('takes a status that came as the answer when the connection is reset before its body ends', async () => {
    const delivered = rawAnswering((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nreceived');
      setTimeout(() => socket.resetAndDestroy(), 200);
    });
    const waiting = rawAnswering((socket) => {
      socket.write('HTTP/1.1 429 Too Many Requests\r\nRetry-After: 600\r\nContent-Length: 100\r\n\r\nslow down');
      setTimeout(() => socket.resetAndDestroy(), 200);
    });
    const send = makeSender({ allowPrivateTargets: true });

    const ok = await send(request(await listen(delivered.server)));
    const asked = await send(request(await listen(waiting.server)));

    expect(ok).toMatchObject({ statusCode: 200, error: undefined });
    expect(delivered.requests).toBe(1);
    expect(asked).toMatchObject({ statusCode: 429, retryAfter: '600' });
  });

  it('takes a 204 as delivered though its server wrote a body after it', async () => {
    const sloppy = rawAnswering((socket) => socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok'));
    const result = await makeSender({ allowPrivateTargets: true })(request(await listen(sloppy.server)));
    expect(result).toMatchObject({ statusCode: 204 });
  });

  it('sends a POST again once at most when a kept connection fails: a subscriber that reads it and resets gets it twice, not once per kept connection', async () => {
    let crashing = false;
    const received: string[] = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => {
        body += chunk;
      });
      req.on('end', () => {
        received.push(`${req.headers['webhook-id']} ${body}`);
        // A worker that takes the delivery, then dies on it: its connection is reset.
        if (crashing) req.socket.resetAndDestroy();
        else setTimeout(() => res.end('ok'), 50);
      });
    });
    const url = await listen(server);
    const send = makeSender({ allowPrivateTargets: true });
    const post = (id: string) => send({ url, headers: { 'webhook-id': id }, body: `{"delivery":"${id}"}`, timeoutMs: 5_000 });
    // Six deliveries at once leave six kept connections in the pool.
    await Promise.all(['msg_a', 'msg_b', 'msg_c', 'msg_d', 'msg_e', 'msg_f'].map(post));
    received.length = 0;
    crashing = true;

    const result = await post('msg_x');

    expect(result).toMatchObject({ statusCode: undefined, error: 'ECONNRESET' });
    expect(received).toHaveLength(2);
  });
});
