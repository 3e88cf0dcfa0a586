import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floodProcess } from '../../bench/flood.ts';

// An API stand-in that accepts every event and counts the requests.
let server: http.Server;
let url = '';
let posts = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on('end', () => {
      posts++;
      const { events } = JSON.parse(body) as { events: unknown[] };
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ events: events.map((_, i) => ({ id: `evt_${posts}_${i}`, status: 'accepted' })) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('the benchmark flood', () => {
  it('runs in a process of its own at the lowest priority, and answers what it sent, when, and the CPU it took', async () => {
    const before = Date.now();
    const result = await floodProcess({
      label: 'flood',
      apiUrl: url,
      key: 'sk_test',
      resources: ['doc:hot'],
      parent: 'doc:root',
      eventsPerRequest: 3,
      requestsPerSecond: 0,
      concurrency: 2,
      durationMs: 300,
      flood: true,
    });
    expect(result.stats.requests).toBeGreaterThan(0);
    expect(result.stats.requests).toBe(posts);
    expect(result.stats.accepted).toBe(posts * 3);
    expect(result.accepted).toHaveLength(posts * 3);
    // chrt and nice are part of every Linux this runs on (util-linux, coreutils).
    expect(['idle', 'nice 19']).toContain(result.stats.priority);
    expect(result.stats.cpuSeconds).toBeGreaterThan(0);
    // The storm is when it sent (its process starts a while after it is asked for).
    expect(result.stats.startedAt).toBeGreaterThanOrEqual(before);
    expect(result.stats.endedAt).toBeGreaterThanOrEqual((result.stats.startedAt ?? 0) + 300);
    expect(result.stats.endedAt).toBeLessThanOrEqual(Date.now());
  });
});

describe('a publishing task', () => {
  it('counts as rejected only what the API refused, and apart what failed: a 5xx, no answer, or an event a 202 could not store', async () => {
    // An API stand-in that answers in turn: accepted, throttled (429), failing (500), not at
    // all, or a 202 whose events were one refused for the resource's rate and two not stored.
    const answered = { accepted: 0, throttled: 0, failed: 0, dropped: 0, partial: 0 };
    let n = 0;
    const api = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const turn = n++ % 5;
        if (turn === 0) {
          answered.accepted++;
          res.writeHead(202, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ events: [0, 1, 2].map((i) => ({ id: `evt_${n}_${i}`, status: 'accepted' })) }));
        } else if (turn === 1) {
          answered.throttled++;
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
          res.end(JSON.stringify({ error: { code: 'rate_limited', message: 'Too many requests for this key; slow down.' } }));
        } else if (turn === 2) {
          answered.failed++;
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'internal', message: 'Something went wrong on our side; try again.' } }));
        } else if (turn === 3) {
          answered.dropped++;
          req.socket.destroy();
        } else {
          answered.partial++;
          res.writeHead(202, { 'content-type': 'application/json' });
          const notStored = { status: 'rejected', error: { code: 'internal', message: 'The event could not be stored; send it again.' } };
          const limited = {
            status: 'rejected',
            error: { code: 'rate_limited', message: 'This resource takes at most 100 events per second.' },
          };
          res.end(JSON.stringify({ events: [limited, notStored, notStored] }));
        }
      });
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    try {
      const { stats } = await floodProcess({
        label: 'mixed',
        apiUrl: `http://127.0.0.1:${(api.address() as AddressInfo).port}`,
        key: 'sk_test',
        resources: ['doc:hot'],
        parent: 'doc:root',
        eventsPerRequest: 3,
        requestsPerSecond: 0,
        concurrency: 1,
        durationMs: 300,
        flood: true,
      });

      expect(answered.partial).toBeGreaterThan(0);
      expect(stats.accepted).toBe(answered.accepted * 3);
      expect(stats.rejected).toBe(answered.throttled * 3 + answered.partial);
      expect(stats.failed).toBe((answered.failed + answered.dropped) * 3 + answered.partial * 2);
    } finally {
      await new Promise((resolve) => api.close(resolve));
    }
  });
});
