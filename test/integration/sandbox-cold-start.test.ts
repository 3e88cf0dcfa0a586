/**
 * A sandbox started on a SLUICE_DATA_DIR of an earlier run: one that an earlier sandbox
 * did not stop cleanly (killed, out of memory, its container stopped hard) is taken
 * over, one that another sandbox of this process still has is refused, and one whose
 * queues and tables an earlier checkout made is brought to this checkout's queue
 * settings and indexes.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand, SetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { GetCommand, PutCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { WatchedWebhooks } from '../../functions/adapters/webhook-store.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { BY_RESOURCE_INDEX, CHAINS_INDEX, CONTROL_TABLE } from '../../functions/definitions/tables.ts';
import { DataDirInUseError } from '../../sandbox/data-dir.ts';
import { createQueues, createTables, type Emulators, sandboxTableName, startEmulators, waitForTable } from '../../sandbox/emulators.ts';
import { startSandbox } from '../../sandbox/sandbox.ts';

/** The control table as a checkout before `by_chain` made it (no CHAINS_INDEX), empty; answers its name. */
async function earlierControlTable(emulators: Emulators): Promise<string> {
  const name = sandboxTableName(CONTROL_TABLE);
  const dynamo = new DynamoDBClient({ ...emulators.dynamo });
  await dynamo.send(
    new CreateTableCommand({
      TableName: name,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: ['pk', 'sk', 'gsi1pk', 'gsi1sk'].map((AttributeName) => ({ AttributeName, AttributeType: 'S' as const })),
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      GlobalSecondaryIndexes: [
        {
          IndexName: BY_RESOURCE_INDEX,
          KeySchema: [
            { AttributeName: 'gsi1pk', KeyType: 'HASH' },
            { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        },
      ],
    }),
  );
  // dynalite answers a create with the table still CREATING, and refuses writes to it
  // until then (as AWS does): on a loaded machine the first put came too soon.
  await waitForTable(dynamo, name, 'active');
  dynamo.destroy();
  return name;
}

describe('a sandbox on the data folder of one that did not stop', () => {
  it('starts when the folder names its own process id, as a container restarted after a hard stop gives the same process the same id', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    // What a sandbox killed with SIGKILL leaves behind, in a container whose processes
    // start in the same order each time: the id this process now has.
    writeFileSync(join(dataDir, 'sandbox.pid'), String(process.pid));

    const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
    await sandbox.stop();
  });

  it('starts when the folder names a process that runs but started after the claim, as a container gives the old id to npm or a shell', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    try {
      const pid = other.pid as number;
      const started = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[19];
      // The claim of a sandbox that started at another time, under the id this process has now.
      writeFileSync(join(dataDir, 'sandbox.pid'), `${pid} ${Number(started) - 100}`);
      const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
      await sandbox.stop();
      // The claim of that very process (and one of an earlier checkout, the id alone) holds.
      for (const claim of [`${pid} ${started}`, `${pid}`]) {
        writeFileSync(join(dataDir, 'sandbox.pid'), claim);
        await expect(startSandbox({ port: 0, dataDir, canary: false }), claim).rejects.toThrow(DataDirInUseError);
      }
    } finally {
      other.kill();
    }
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

describe('a new data folder', () => {
  it("is made for its owner alone: it holds webhooks' signing secrets and the canary tenant's key", async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'sluice-mode-')), 'data');
    const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
    await sandbox.stop();
    for (const folder of [dataDir, join(dataDir, 'sqs')]) expect(statSync(folder).mode & 0o777, folder).toBe(0o700);
  });

  it('keeps its stores for its owner alone in a folder made beforehand that others may read (mkdir data): they hold the same secrets', async () => {
    // Empty, and with an earlier checkout's stores, made before they were kept for their owner.
    for (const earlier of [[], ['dynamodb', 'sqs']]) {
      const dataDir = join(mkdtempSync(join(tmpdir(), 'sluice-mode-')), 'data');
      for (const folder of [dataDir, ...earlier.map((store) => join(dataDir, store))]) {
        mkdirSync(folder);
        chmodSync(folder, 0o755);
      }
      const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
      await sandbox.stop();
      // The folder itself is the user's to set (it may be any folder); the stores in it are sluice's.
      expect(statSync(dataDir).mode & 0o777).toBe(0o755);
      for (const store of ['dynamodb', 'sqs']) expect(statSync(join(dataDir, store)).mode & 0o777, `${store} ${earlier}`).toBe(0o700);
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

  it('gives a table an earlier version made the indexes this version defines, its items kept and indexed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-tables-'));
    // The control table as a checkout before `by_chain` made it, with a webhook item on it.
    const earlier = await startEmulators(dataDir);
    const name = await earlierControlTable(earlier);
    const item = { pk: 'tenant#ten_old', sk: 'webhook#wh_old', chain_shard: 'chain#0', chain_sk: 'wh_old', url: 'https://example.com/old' };
    await documentClient(earlier.dynamo).send(new PutCommand({ TableName: name, Item: item }));
    await earlier.stop();

    const again = await startEmulators(dataDir);
    try {
      const client = new DynamoDBClient({ ...again.dynamo });
      await createTables(client);
      const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
      expect((Table?.GlobalSecondaryIndexes ?? []).map((index) => index.IndexName).sort()).toEqual(
        [BY_RESOURCE_INDEX, CHAINS_INDEX].sort(),
      );
      const documents = documentClient(again.dynamo);
      expect((await documents.send(new GetCommand({ TableName: name, Key: { pk: item.pk, sk: item.sk } }))).Item).toEqual(item);
      // Indexed as AWS's backfill of a new index would.
      expect(await new WatchedWebhooks({ client: documents, tableName: name }).list(0)).toEqual([
        { tenantId: 'ten_old', webhookId: 'wh_old' },
      ]);
      client.destroy();
    } finally {
      await again.stop();
    }
  });

  it('keeps the items of a table it was making again when it died (Ctrl-C or kill -9 during the start), and writes them back at the next start', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-remake-'));
    const earlier = await startEmulators(dataDir);
    const name = await earlierControlTable(earlier);
    // Two batched writes' worth, so that the write-back can stop between them.
    const items = Array.from({ length: 30 }, (_, i) => ({
      pk: `tenant#ten_${i}`,
      sk: 'tenant',
      name: `tenant ${i}`,
      bytes: new Uint8Array([i, 255]),
    }));
    const earlierDocuments = documentClient(earlier.dynamo);
    for (const item of items) await earlierDocuments.send(new PutCommand({ TableName: name, Item: item }));
    earlierDocuments.destroy();
    await earlier.stop();

    // A start that stops for good after the table was made again and its first 25 items
    // written back: its process killed there (a Ctrl-C during the start, which takes a
    // while on a large table, is one: the sandbox handles Ctrl-C only once it has started).
    const dying = await startEmulators(dataDir);
    const client = new DynamoDBClient({ ...dying.dynamo });
    let writes = 0;
    const killed = new Promise<void>((resolve) => {
      client.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName === 'BatchWriteItemCommand' && ++writes === 2) {
            resolve();
            return new Promise<never>(() => {});
          }
          return next(args);
        },
        { step: 'initialize', name: 'killedAtTheSecondWriteBack' },
      );
    });
    void createTables(client, { dataDir });
    await killed;
    client.destroy();
    await dying.stop();

    const again = await startEmulators(dataDir);
    try {
      await createTables(new DynamoDBClient({ ...again.dynamo }), { dataDir });
      const documents = documentClient(again.dynamo);
      const found = await documents.send(new ScanCommand({ TableName: name }));
      expect(found.Items?.length).toBe(items.length);
      expect(await documents.send(new GetCommand({ TableName: name, Key: { pk: 'tenant#ten_29', sk: 'tenant' } }))).toMatchObject({
        Item: items[29],
      });
      documents.destroy();
    } finally {
      await again.stop();
    }
  });
});
