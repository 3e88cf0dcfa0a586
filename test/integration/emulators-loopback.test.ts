/**
 * The embedded emulators listen on loopback only, and answer no web page: their tables
 * and queues hold every webhook's secret and every tenant's events, and anyone who
 * reached them could read those, or send a delivery that the sandbox would sign and POST.
 */
import http from 'node:http';
import net from 'node:net';
import { ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { ListQueuesCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dynamoClient, sqsClient } from '../../functions/adapters/aws.ts';
import { type Emulators, startEmulators } from '../../sandbox/emulators.ts';

let emulators: Emulators;

beforeAll(async () => {
  emulators = await startEmulators();
});

afterAll(async () => {
  await emulators?.stop();
});

/** Whether a TCP connection to host:port is accepted. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(2_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('the embedded emulators', () => {
  it.each(['dynamo', 'sqs'] as const)('take %s connections on 127.0.0.1 alone, not on every address of the machine', async (service) => {
    const port = Number(new URL(emulators[service].endpoint as string).port);

    expect(await accepts('127.0.0.1', port)).toBe(true);
    // Another address of the machine: 127.0.0.2 is one on Linux, as is any of its network interfaces.
    // A server bound to 0.0.0.0 accepts there; one bound to 127.0.0.1 does not.
    expect(await accepts('127.0.0.2', port)).toBe(false);
  });
});

/** A listing call each emulator answers, as its protocol has it (any signature passes: the emulators check none). */
const LISTING = {
  dynamo: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.ListTables' },
  sqs: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.ListQueues' },
} as const;
const SIGNED = {
  authorization: 'AWS4-HMAC-SHA256 Credential=sandbox/20260101/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00',
  'x-amz-date': '20260101T000000Z',
};

/** Sends a request to the emulator's port with exactly these headers (Host too), and returns its status and headers. */
function send(
  port: number,
  method: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, method, path: '/', headers, agent: false }, (response) => {
      response.resume();
      response.once('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers }));
    });
    request.once('error', reject);
    request.end(method === 'POST' ? '{}' : undefined);
  });
}

describe('the embedded emulators answer no web page', () => {
  it.each([
    'dynamo',
    'sqs',
  ] as const)("%s: a page's preflight and request are refused, with nothing that lets the page read them", async (service) => {
    const port = Number(new URL(emulators[service].endpoint as string).port);
    const host = `127.0.0.1:${port}`;
    // What the sandbox's own callers send is answered (the call is well formed).
    expect((await send(port, 'POST', { host, ...LISTING[service], ...SIGNED })).status).toBe(200);

    const origin = 'https://pages.example';
    const preflight = await send(port, 'OPTIONS', {
      host,
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type,x-amz-date,x-amz-target',
    });
    const call = await send(port, 'POST', { host, origin, ...LISTING[service], ...SIGNED });
    expect(preflight.status).toBe(403);
    expect(call.status).toBe(403);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    expect(call.headers['access-control-allow-origin']).toBeUndefined();
  });

  it.each([
    'dynamo',
    'sqs',
  ] as const)('%s: a request naming another host (DNS rebinding) is refused; localhost is taken', async (service) => {
    const port = Number(new URL(emulators[service].endpoint as string).port);
    expect((await send(port, 'POST', { host: `pages.example:${port}`, ...LISTING[service], ...SIGNED })).status).toBe(403);
    expect((await send(port, 'POST', { host: `127.0.0.1:${port + 1}`, ...LISTING[service], ...SIGNED })).status).toBe(403);
    expect((await send(port, 'POST', { host: `localhost:${port}`, ...LISTING[service], ...SIGNED })).status).toBe(200);
  });

  it("the sandbox's own SDK clients are answered", async () => {
    const tables = await dynamoClient(emulators.dynamo).send(new ListTablesCommand({}));
    const queues = await sqsClient(emulators.sqs).send(new ListQueuesCommand({}));
    expect(Array.isArray(tables.TableNames)).toBe(true);
    expect(queues.$metadata.httpStatusCode).toBe(200);
  });
});
