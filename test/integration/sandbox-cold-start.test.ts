/**
 * A sandbox started on a SLUICE_DATA_DIR of an earlier run: one that an earlier sandbox
 * did not stop cleanly (killed, out of memory, its container stopped hard) is taken
 * over, one that another sandbox of this process still has is refused, and one whose
 * queues an earlier checkout made is brought to this checkout's queue settings.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetQueueAttributesCommand, SetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { sqsClient } from '../../functions/adapters/aws.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { DataDirInUseError } from '../../sandbox/data-dir.ts';
import { createQueues, startEmulators } from '../../sandbox/emulators.ts';
import { startSandbox } from '../../sandbox/sandbox.ts';

describe('a sandbox on the data folder of one that did not stop', () => {
  it('starts when the folder names its own process id, as a container restarted after a hard stop gives the same process the same id', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    // What a sandbox killed with SIGKILL leaves behind, in a container whose processes
    // start in the same order each time: the id this process now has.
    writeFileSync(join(dataDir, 'sandbox.pid'), String(process.pid));

    const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
    await sandbox.stop();
  });

  it('is still refused while another sandbox of this process has the folder', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    const first = await startSandbox({ port: 0, dataDir, canary: false });
    try {
      await expect(startSandbox({ port: 0, dataDir, canary: false })).rejects.toThrow(DataDirInUseError);
    } finally {
      await first.stop();
    }
  });
});

describe('a sandbox on the data folder of an earlier checkout', () => {
  it('starts on queues an earlier version made with other attributes, and gives them this version’s', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-queues-'));
    // The deliver queue as a checkout before d6a5454 made it: a 90 s visibility timeout.
    const earlier = await startEmulators(dataDir);
    const client = sqsClient(earlier.sqs);
    const made = await createQueues(client);
    const deliverUrl = made[DELIVER_QUEUE.logicalName]?.url as string;
    await client.send(new SetQueueAttributesCommand({ QueueUrl: deliverUrl, Attributes: { VisibilityTimeout: '90' } }));
    client.destroy();
    await earlier.stop();

    const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
    try {
      const queue = sandbox.queues[DELIVER_QUEUE.logicalName]?.url as string;
      const attributes = await sqsClient(sandbox.emulators.sqs).send(
        new GetQueueAttributesCommand({ QueueUrl: queue, AttributeNames: ['VisibilityTimeout'] }),
      );
      expect(attributes.Attributes?.VisibilityTimeout).toBe(String(DELIVER_QUEUE.visibilityTimeoutSeconds));
    } finally {
      await sandbox.stop();
    }
  });
});
