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
