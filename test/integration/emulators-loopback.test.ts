/**
 * The embedded emulators listen on loopback only: their tables and queues hold every
 * webhook's secret and every tenant's events, and anyone who reached them could read
 * those, or send a delivery that the sandbox would sign and POST.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
