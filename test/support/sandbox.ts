/**
 * The setup most integration files share: a sandbox on a free port and a webhook
 * receiver, started before the file's tests and stopped after them.
 */
import { afterAll, beforeAll } from 'vitest';
import { type Sandbox, type SandboxOptions, startSandbox } from '../../sandbox/sandbox.ts';
import { type Receiver, startReceiver } from './receiver.ts';

/**
 * Registers the file's beforeAll and afterAll. `ready` gets the two once they run,
 * to keep them and to do the file's own setup (tenants, stores).
 */
export function withSandbox(options: SandboxOptions, ready: (sandbox: Sandbox, receiver: Receiver) => unknown): void {
  let started: [Sandbox, Receiver] | undefined;
  beforeAll(async () => {
    started = await Promise.all([startSandbox({ port: 0, ...options }), startReceiver()]);
    await ready(...started);
  });
  afterAll(async () => {
    await started?.[0].stop();
    await started?.[1].close();
  });
}
