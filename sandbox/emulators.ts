/**
 * The embedded emulators: dynalite (DynamoDB) and fauxqs (SQS), on loopback ports,
 * with the tables and queues created from the same definitions the CDK stack uses.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Server as HttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { type AddressInfo, type ListenOptions, Server } from 'node:net';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { Worker } from 'node:worker_threads';
import {
  type AttributeValue,
  BatchWriteItemCommand,
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  ResourceInUseException,
  ResourceNotFoundException,
  ScanCommand,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  QueueNameExists,
  SetQueueAttributesCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import dynalite from 'dynalite';
import { startFauxqs } from 'fauxqs';
import type { ClientOptions } from '../functions/adapters/aws.ts';
import type { QueueDefinition } from '../functions/definitions/queues.ts';
import { QUEUES, SQS_MAX_MESSAGE_BYTES } from '../functions/definitions/queues.ts';
import type { TableDefinition } from '../functions/definitions/tables.ts';
import { projectionOf, TABLES } from '../functions/definitions/tables.ts';
import { keepDynaliteParses } from './dynalite-parses.ts';
import { firstMessage, PendingAnswers, type SandboxThreadError, settled, watchThread } from './threads.ts';

export const EMULATOR_CREDENTIALS = { accessKeyId: 'sandbox', secretAccessKey: 'sandbox' };
export const EMULATOR_REGION = 'us-east-1';

export interface Emulators {
  readonly dynamo: ClientOptions;
  readonly sqs: ClientOptions;
  /**
   * How long dynalite took over each request it read in a window (ms), from the
   * moment it read it to its answer's end (the benchmark sets these beside the
   * callers' own times: what the difference is, the callers waited for themselves).
   */
  dynamoServiceTimes(from: number, to: number): Promise<number[]>;
  stop(): Promise<void>;
}

/** The requests an emulator answered: when each was read, and how long its answer took (ms). */
class ServiceTimes {
  // At most this many are kept (the oldest go first): a bench scenario makes about a tenth of it.
  static readonly #KEEP = 500_000;
  #at: number[] = [];
  #ms: number[] = [];

  add(at: number, ms: number): void {
    if (this.#at.length >= ServiceTimes.#KEEP) {
      this.#at = this.#at.slice(ServiceTimes.#KEEP / 2);
      this.#ms = this.#ms.slice(ServiceTimes.#KEEP / 2);
    }
    this.#at.push(at);
    this.#ms.push(ms);
  }

  between(from: number, to: number): number[] {
    return this.#ms.filter((_, i) => (this.#at[i] as number) >= from && (this.#at[i] as number) < to);
  }
}

/** A data folder's store that does not open: which, why, and what to do. */
function unopenable(dataDir: string, store: 'DynamoDB' | 'SQS', path: string, cause: string): Error {
  return new Error(
    `SLUICE_DATA_DIR ${dataDir} cannot be used: its ${store} store (${path}) does not open (${cause}). Move the folder aside, or delete it, to start with an empty one.`,
  );
}

/**
 * Opens the DynamoDB store of a data folder and closes it again, or throws a sentence that
 * names the folder and what to do. dynalite opens it on its own, without a word if it
 * cannot (a store cut short or damaged), and the sandbox then stopped at its first
 * request: "The sandbox's emulator thread stopped: Database is closed", which starting
 * again met again. The store is dynalite's own LevelDB (its `level`, not one of ours).
 */
async function openableStore(dataDir: string, path: string): Promise<void> {
  const fromDynalite = createRequire(createRequire(import.meta.url).resolve('dynalite'));
  const { Level } = fromDynalite('level') as {
    Level: new (path: string) => { open(): Promise<void>; close(): Promise<void> };
  };
  const store = new Level(path);
  try {
    await store.open();
  } catch (error) {
    throw unopenable(dataDir, 'DynamoDB', path, (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message);
  }
  await store.close();
}

/**
 * Makes a store's folder in the data folder, for its owner alone, and sets one already
 * there so: the stores hold webhooks' signing secrets and the canary tenant's key. The
 * data folder's own mode is the user's (it may be any folder, made with `mkdir data`
 * and readable by others); a store's, made by DynamoDB's store itself, or by an earlier
 * checkout, would be too.
 */
function ownerOnly(folder: string): void {
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  chmodSync(folder, 0o700);
}

export async function startEmulators(dataDir?: string): Promise<Emulators> {
  if (dataDir) for (const store of ['sqs', 'dynamodb']) ownerOnly(join(dataDir, store));
  if (dataDir) await openableStore(dataDir, join(dataDir, 'dynamodb'));
  // dynalite's own parses of expressions were a third of its time on the reserving write.
  keepDynaliteParses();
  const dynamoServer = dynalite({
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
    ...(dataDir && { path: join(dataDir, 'dynamodb') }),
  });
  callersOfThisMachineOnly(dynamoServer);
  await new Promise<void>((resolve, reject) => {
    dynamoServer.once('error', reject);
    dynamoServer.listen(0, '127.0.0.1', () => resolve());
  });
  const dynamoPort = (dynamoServer.address() as AddressInfo).port;
  const dynamoTimes = new ServiceTimes();
  dynamoServer.on('request', (_request: unknown, response: { once(event: 'finish', listener: () => void): void }) => {
    const at = Date.now();
    const started = performance.now();
    response.once('finish', () => dynamoTimes.add(at, performance.now() - started));
  });
  const sqsServer = await onLoopback(() =>
    startFauxqs({ port: 0, host: '127.0.0.1', logger: false, ...(dataDir && { dataDir: join(dataDir, 'sqs') }) }),
  ).catch((error: unknown) => {
    // Its SQLite file damaged, or not one: said with the folder, as the DynamoDB store's is.
    if (!dataDir) throw error;
    throw unopenable(dataDir, 'SQS', join(dataDir, 'sqs'), (error as Error).message);
  });
  const common = { region: EMULATOR_REGION, credentials: EMULATOR_CREDENTIALS };
  return {
    dynamo: { ...common, endpoint: `http://127.0.0.1:${dynamoPort}` },
    sqs: { ...common, endpoint: `http://127.0.0.1:${sqsServer.port}` },
    dynamoServiceTimes: async (from, to) => dynamoTimes.between(from, to),
    async stop() {
      await sqsServer.stop();
      // Every client is done by now: no connection may hold the close. dynalite then
      // waits for its store's pending operations, and with a data directory it can
      // wait for one that never ends (up to its 30 s); LevelDB recovers its log on
      // open, so after a while the sandbox stops without it.
      await settled(
        [
          new Promise<void>((resolve) => {
            dynamoServer.close(() => resolve());
            dynamoServer.closeAllConnections();
          }),
        ],
        2_000,
      );
    },
  };
}

/**
 * Runs `start` with every server it starts listening on 127.0.0.1 where it asked for
 * every address. fauxqs takes `host` only for the queue URLs it makes and listens on
 * 0.0.0.0: its queues, which hold every tenant's events and deliveries, were open to
 * anyone on the network, who could read them or send a delivery the sandbox would sign
 * with the webhook's secret and POST. Its HTTP servers answer only this machine's
 * callers (`callersOfThisMachineOnly`).
 */
async function onLoopback<T>(start: () => Promise<T>): Promise<T> {
  const listen = Server.prototype.listen;
  Server.prototype.listen = function (this: Server, ...args: unknown[]) {
    const [options] = args;
    if (typeof options === 'object' && options !== null && (options as ListenOptions).host === '0.0.0.0') {
      args[0] = { ...options, host: '127.0.0.1' };
    }
    if (this instanceof HttpServer) callersOfThisMachineOnly(this);
    return (listen as (...a: unknown[]) => Server).apply(this, args);
  } as typeof listen;
  try {
    return await start();
  } finally {
    Server.prototype.listen = listen;
  }
}

type RequestListener = (request: IncomingMessage, response: ServerResponse) => void;

/**
 * Makes an emulator's HTTP server refuse, before the emulator reads them, the requests a
 * web page open in a browser on this machine could make: those with an `Origin` header,
 * and those naming a host other than the loopback address it listens on (a page's own
 * name, resolved to 127.0.0.1 by DNS rebinding). Listening on loopback keeps other
 * machines out, not the pages this one shows: dynalite answers any page's preflight
 * with `Access-Control-Allow-Origin: *` and checks no signature, so a page that found
 * its port could read the control table (every webhook's signing secret, the canary's
 * key) and write it. The SDK's clients send no `Origin`, and name the endpoint they
 * were given, `127.0.0.1:<port>` (`localhost` is taken too).
 */
function callersOfThisMachineOnly(server: HttpServer): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  // Known once it listens (its port chosen then), not looked up for every request.
  let hosts: ReadonlySet<string> = new Set();
  server.once('listening', () => {
    const { port } = server.address() as AddressInfo;
    hosts = new Set([`127.0.0.1:${port}`, `localhost:${port}`]);
  });
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    if (request.headers.origin !== undefined || !hosts.has(request.headers.host ?? '')) {
      response.writeHead(403, { 'content-type': 'text/plain' });
      response.end('This emulator answers only the sandbox (no web page, and http://127.0.0.1:<port>).\n');
      return;
    }
    for (const listener of listeners) listener.call(server, request, response);
  });
}

/** The physical table name the sandbox gives a definition. */
export function sandboxTableName(definition: TableDefinition): string {
  return `sluice-${definition.logicalName.toLowerCase()}`;
}

/**
 * Makes the tables, or gives those a persisted sandbox already has the indexes this
 * checkout defines. `dataDir` is the data folder the emulators keep them in, where a
 * table being made again keeps a copy of its items until they are all written back.
 */
export async function createTables(client: DynamoDBClient, options: { dataDir?: string } = {}): Promise<Record<string, string>> {
  const names: Record<string, string> = {};
  for (const table of TABLES) {
    const name = sandboxTableName(table);
    names[table.logicalName] = name;
    const copy = options.dataDir ? join(options.dataDir, `${name}.remaking`) : undefined;
    try {
      await createTable(client, name, table);
    } catch (error) {
      // A persisted sandbox (SLUICE_DATA_DIR) already has its tables.
      if (!(error instanceof ResourceInUseException)) throw error;
      await addMissingIndexes(client, name, table, copy);
    }
    await waitForTable(client, name, 'active');
    // A start that died while it made this table again (killed, or a Ctrl-C, which the
    // sandbox handles only once it has started) left the table without some of its
    // items, or gone: they are written back from the copy it made before the deletion.
    if (copy && existsSync(copy)) {
      console.warn(`Table ${name} was being made again when the sandbox stopped: writing its items back`);
      await writeItems(client, name, deserialize(readFileSync(copy)) as Array<Record<string, AttributeValue>>);
      rmSync(copy);
    }
  }
  return names;
}

async function createTable(client: DynamoDBClient, name: string, table: TableDefinition): Promise<void> {
  const keys = [table.partitionKey, table.sortKey, ...table.indexes.flatMap((i) => [i.partitionKey, i.sortKey])];
  const attributes = [...new Map(keys.map((k) => [k.name, { AttributeName: k.name, AttributeType: k.type }])).values()];
  await client.send(
    new CreateTableCommand({
      TableName: name,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: attributes,
      KeySchema: [
        { AttributeName: table.partitionKey.name, KeyType: 'HASH' },
        { AttributeName: table.sortKey.name, KeyType: 'RANGE' },
      ],
      ...(table.indexes.length > 0 && {
        GlobalSecondaryIndexes: table.indexes.map((index) => {
          const projection = projectionOf(index);
          return {
            IndexName: index.indexName,
            KeySchema: [
              { AttributeName: index.partitionKey.name, KeyType: 'HASH' },
              { AttributeName: index.sortKey.name, KeyType: 'RANGE' },
            ],
            Projection: { ProjectionType: projection.type, NonKeyAttributes: projection.nonKeyAttributes },
          };
        }),
      }),
    }),
  );
}

/**
 * Gives a persisted sandbox's table (a folder from an earlier checkout) the indexes
 * this checkout defines, as `cdk deploy` adds one to a table in AWS, which then fills
 * it from the items there. dynalite cannot add an index to a table: the table is made
 * again, with its items written back, which fills the new index as AWS's backfill does.
 */
async function addMissingIndexes(client: DynamoDBClient, name: string, table: TableDefinition, copy: string | undefined): Promise<void> {
  await waitForTable(client, name, 'active');
  const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
  const has = new Set((Table?.GlobalSecondaryIndexes ?? []).map((index) => index.IndexName));
  const missing = table.indexes.filter((index) => !has.has(index.indexName)).map((index) => index.indexName);
  if (missing.length === 0) return;
  console.warn(`Table ${name} from an earlier checkout lacks the index ${missing.join(', ')}: making it again with its items`);
  const items: Array<Record<string, AttributeValue>> = [];
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const page = await client.send(new ScanCommand({ TableName: name, ExclusiveStartKey: startKey }));
    items.push(...(page.Items ?? []));
    startKey = page.LastEvaluatedKey;
  } while (startKey);
  // Kept in the data folder until every item is written back (see createTables): a start
  // killed between the deletion and the last write lost the items not yet written, for
  // good. Written whole and then renamed, so that a copy that exists is complete.
  if (copy) {
    // Owner only, as the folder: it holds webhooks' signing secrets and tenants' key hashes.
    writeFileSync(`${copy}.partial`, serialize(items), { mode: 0o600 });
    renameSync(`${copy}.partial`, copy);
  }
  await client.send(new DeleteTableCommand({ TableName: name }));
  await waitForTable(client, name, 'gone');
  await createTable(client, name, table);
  await waitForTable(client, name, 'active');
  await writeItems(client, name, items);
  if (copy) rmSync(copy);
}

/** Puts `items` in the table, 25 to a batched write, each batch's unprocessed ones again. */
async function writeItems(client: DynamoDBClient, name: string, items: ReadonlyArray<Record<string, AttributeValue>>): Promise<void> {
  for (let at = 0; at < items.length; at += 25) {
    let requests: WriteRequest[] = items.slice(at, at + 25).map((Item) => ({ PutRequest: { Item } }));
    while (requests.length > 0) {
      const { UnprocessedItems } = await client.send(new BatchWriteItemCommand({ RequestItems: { [name]: requests } }));
      requests = UnprocessedItems?.[name] ?? [];
    }
  }
}

/** Waits (2 s at most) until the table is active, or gone. */
export async function waitForTable(client: DynamoDBClient, name: string, until: 'active' | 'gone'): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
      if (until === 'active' && Table?.TableStatus === 'ACTIVE') return;
    } catch (error) {
      if (!(until === 'gone' && error instanceof ResourceNotFoundException)) throw error;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Table ${name} did not become ${until}`);
}

export interface SandboxQueue {
  readonly definition: QueueDefinition;
  readonly url: string;
  readonly deadLetterUrl: string;
}

/**
 * Makes a queue with these attributes, or gives them to the one of this name a
 * persisted sandbox (SLUICE_DATA_DIR) already has, as CloudFormation updates a queue in
 * place: a folder from an earlier checkout, whose queues had other attributes (a
 * visibility timeout before d6a5454), was refused at every start with QueueNameExists.
 * Whether a queue is FIFO cannot change, and never has.
 */
async function ensureQueue(client: SQSClient, name: string, attributes: Record<string, string>): Promise<string> {
  try {
    const made = await client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
    return made.QueueUrl as string;
  } catch (error) {
    // The SDK's class, or the emulator's name for it (AWS.SimpleQueueService.QueueNameExists).
    if (!(error instanceof QueueNameExists || /QueueNameExists$/.test((error as Error).name))) throw error;
    const { QueueUrl } = await client.send(new GetQueueUrlCommand({ QueueName: name }));
    const { FifoQueue: _, ...changeable } = attributes;
    await client.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: changeable }));
    return QueueUrl as string;
  }
}

export async function createQueues(client: SQSClient): Promise<Record<string, SandboxQueue>> {
  const queues: Record<string, SandboxQueue> = {};
  for (const definition of QUEUES) {
    const suffix = definition.fifo ? '.fifo' : '';
    const base = `sluice-${definition.logicalName.toLowerCase()}`;
    const fifo: Record<string, string> = definition.fifo ? { FifoQueue: 'true', ContentBasedDeduplication: 'false' } : {};
    const dlqUrl = await ensureQueue(client, `${base}-dlq${suffix}`, {
      ...fifo,
      MessageRetentionPeriod: String(definition.retentionSeconds),
      MaximumMessageSize: String(SQS_MAX_MESSAGE_BYTES),
    });
    const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }));
    const url = await ensureQueue(client, `${base}${suffix}`, {
      ...fifo,
      VisibilityTimeout: String(definition.visibilityTimeoutSeconds),
      MessageRetentionPeriod: String(definition.retentionSeconds),
      MaximumMessageSize: String(SQS_MAX_MESSAGE_BYTES),
      RedrivePolicy: JSON.stringify({ deadLetterTargetArn: Attributes?.QueueArn, maxReceiveCount: definition.maxReceiveCount }),
    });
    queues[definition.logicalName] = { definition, url, deadLetterUrl: dlqUrl };
  }
  return queues;
}

/**
 * Starts the emulators on a worker thread of this process (see emulator-thread.ts)
 * and answers with their endpoints, as `startEmulators` does.
 */
export async function startEmulatorsOnThread(
  dataDir: string | undefined,
  onFailure: (error: SandboxThreadError) => void,
): Promise<Emulators> {
  const worker = new Worker(new URL('./emulator-thread.ts', import.meta.url), { workerData: { dataDir }, name: 'sluice-emulators' });
  const ready = await firstMessage<{ cmd: string; dynamo: ClientOptions; sqs: ClientOptions }>(worker, 'emulator');
  const watched = watchThread(worker, 'emulator', onFailure);
  const times = new PendingAnswers<number[]>();
  let stopped: (() => void) | undefined;
  worker.on('message', (message: { cmd: string; id?: number; times?: number[] }) => {
    if (message.cmd === 'stopped') stopped?.();
    if (message.cmd === 'times' && message.id !== undefined && message.times) times.answer(message.id, message.times);
  });
  return {
    dynamo: ready.dynamo,
    sqs: ready.sqs,
    dynamoServiceTimes: (from, to) => times.ask((id) => worker.postMessage({ cmd: 'times', id, from, to })),
    async stop() {
      watched.stopping();
      const done = new Promise<void>((resolve) => {
        stopped = resolve;
      });
      worker.postMessage({ cmd: 'stop' });
      await done;
      await worker.terminate();
    },
  };
}
