/**
 * A call whose connection hangs in AWS is given up after AWS_CALL_TIMEOUTS and tried
 * again, rather than waiting for the SDK's own socket timeouts (minutes, past every
 * function's timeout). The clients are built as the Lambda entry files build them (no
 * endpoint: AWS's, reached here through `AWS_ENDPOINT_URL_*`), in front of a proxy that
 * swallows the first request it is sent and passes the rest to the real emulator.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateQueueCommand, ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, describe, expect, it } from 'vitest';
import { AWS_CALL_TIMEOUTS, documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { SnsNotifier, snsClient } from '../../functions/adapters/notifier.ts';
import type { WebhookDisabledNotice } from '../../functions/app/delivery/deps.ts';
import { withEventsTable } from '../support/events-table.ts';

const events = withEventsTable();

/** A server that never answers its first `stall` requests (their sockets stay open) and hands the rest to `answer`. */
async function stallingServer(stall: number, answer: (request: http.IncomingMessage, body: Buffer, response: http.ServerResponse) => void) {
  const seen: string[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      seen.push(String(request.headers['x-amz-target'] ?? request.url));
      if (seen.length > stall) answer(request, Buffer.concat(chunks), response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  stopping.push(
    () => new Promise<void>((resolve) => server.close(() => resolve())),
    () => server.closeAllConnections(),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** Passes a request on to `target` as it came, and its answer back. */
function forwardTo(target: string) {
  return (request: http.IncomingMessage, body: Buffer, response: http.ServerResponse) => {
    // Named as the emulator's own host: the emulators answer no other (sandbox/emulators.ts).
    const headers = { ...request.headers, host: new URL(target).host };
    const onward = http.request(new URL(request.url ?? '/', target), { method: request.method, headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    });
    onward.end(body);
  };
}

const stopping: (() => unknown)[] = [];
afterAll(async () => {
  for (const stop of stopping.reverse()) await stop();
});

/** Builds a client and makes its calls in `act` with the AWS SDK's environment pointing it at `url`, as a deployed function's would. */
async function asDeployed<T>(variable: string, url: string, act: () => Promise<T>): Promise<T> {
  const saved = { ...process.env };
  Object.assign(process.env, {
    [variable]: url,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'sandbox',
    AWS_SECRET_ACCESS_KEY: 'sandbox',
  });
  try {
    return await act();
  } finally {
    process.env = saved;
  }
}

describe("AWS clients' timeouts (in AWS: the emulators' clients have none)", () => {
  it('a DynamoDB write whose first try is never answered is sent again after the request timeout, and applies once', async () => {
    const proxy = await stallingServer(1, forwardTo(events.emulators.dynamo.endpoint as string));
    const startedAt = Date.now();
    const outcome = await asDeployed('AWS_ENDPOINT_URL_DYNAMODB', proxy.url, () =>
      documentClient().send(new PutCommand({ TableName: events.table, Item: { pk: 'timeouts', sk: 'put', n: 1 } })),
    );
    const tookMs = Date.now() - startedAt;
    expect(proxy.seen).toEqual(['DynamoDB_20120810.PutItem', 'DynamoDB_20120810.PutItem']);
    expect(outcome.$metadata.attempts).toBe(2);
    expect(tookMs).toBeGreaterThanOrEqual(AWS_CALL_TIMEOUTS.requestTimeout - 50);
    const read = await events.client.send(new GetCommand({ TableName: events.table, Key: { pk: 'timeouts', sk: 'put' } }));
    expect(read.Item).toMatchObject({ n: 1 });
  }, 20_000);

  it('an SQS send whose first try is never answered is sent again, and the message arrives', async () => {
    const direct = sqsClient(events.emulators.sqs);
    const { QueueUrl } = await direct.send(new CreateQueueCommand({ QueueName: `timeouts-${Date.now()}` }));
    const proxy = await stallingServer(1, forwardTo(events.emulators.sqs.endpoint as string));
    // In AWS the queue's URL and the client's endpoint share their origin (the SDK sends to the URL's).
    // (fauxqs names its queues' hosts `sqs.<region>.127.0.0.1:<port>`, which is no URL's.)
    const throughProxy = (QueueUrl as string).replace(/^http:\/\/[^/]+/, proxy.url);
    const outcome = await asDeployed('AWS_ENDPOINT_URL_SQS', proxy.url, () =>
      sqsClient().send(new SendMessageCommand({ QueueUrl: throughProxy, MessageBody: 'after a hung try' })),
    );
    expect(proxy.seen).toEqual(['AmazonSQS.SendMessage', 'AmazonSQS.SendMessage']);
    expect(outcome.$metadata.attempts).toBe(2);
    const received = await direct.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1, MaxNumberOfMessages: 10 }));
    expect(received.Messages?.map((m) => m.Body)).toEqual(['after a hung try']);
  }, 20_000);

  it("the delivery function's disable notice is published on a second try when SNS does not answer the first", async () => {
    // No SNS emulator runs here: the second request is answered as SNS answers a Publish.
    const published: string[] = [];
    const proxy = await stallingServer(1, (_request, body, response) => {
      published.push(new URLSearchParams(body.toString()).get('Message') ?? '');
      response.writeHead(200, { 'content-type': 'text/xml' });
      response.end(
        '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult><MessageId>m-1</MessageId></PublishResult>' +
          '<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>',
      );
    });
    const notice: WebhookDisabledNotice = {
      type: 'webhook.disabled',
      tenant: 'ten_1',
      webhook: 'wh_1',
      url: 'https://example.com/hook',
      reason: 'failing',
      last_error: null,
      at: '2026-12-04T00:00:00.000Z',
    };
    await asDeployed('AWS_ENDPOINT_URL_SNS', proxy.url, () =>
      new SnsNotifier({ client: snsClient(), topicArn: 'arn:aws:sns:us-east-1:000000000000:disabled' }).webhookDisabled(notice),
    );
    expect(proxy.seen).toHaveLength(2);
    expect(published.map((m) => JSON.parse(m))).toEqual([notice]);
  }, 20_000);
});
