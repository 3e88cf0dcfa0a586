/**
 * SNS in the sandbox, which has no SNS emulator: the functions tell a webhook's owner
 * it was disabled with the same SnsNotifier as in AWS, through a real SNS client whose
 * requests never leave this process. Each signed Publish is read back into its notice
 * and kept (the sandbox serves them at /sandbox/notifications). So the SDK middleware
 * that counts the sandbox's AWS calls (the benchmark's accounting) sees SNS's as it
 * sees DynamoDB's and SQS's, with the input AWS would get.
 */
import { randomUUID } from 'node:crypto';
import { SNSClient } from '@aws-sdk/client-sns';
import { withoutSdkLogging } from '../functions/adapters/aws.ts';
import type { WebhookDisabledNotice } from '../functions/app/delivery/deps.ts';

/** The "webhook disabled" topic's ARN in the sandbox (in AWS, the stack's topic). */
export const SANDBOX_WEBHOOK_DISABLED_TOPIC = 'arn:aws:sns:us-east-1:000000000000:sluice-webhook-disabled';

/** An SNS client that answers every Publish itself, handing its message to `keep`. */
export function localSnsClient(keep: (notice: WebhookDisabledNotice) => void): SNSClient {
  return withoutSdkLogging(
    new SNSClient({
      region: 'us-east-1',
      credentials: { accessKeyId: 'sandbox', secretAccessKey: 'sandbox' },
      requestHandler: {
        // The SDK sends SNS's query protocol: a form-encoded body, answered in XML.
        async handle(request: { body?: unknown }) {
          const form = new URLSearchParams(String(request.body ?? ''));
          if (form.get('Action') !== 'Publish') throw new Error(`The sandbox's SNS answers Publish only, not ${form.get('Action')}`);
          keep(JSON.parse(form.get('Message') ?? 'null') as WebhookDisabledNotice);
          const xml =
            '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">' +
            `<PublishResult><MessageId>${randomUUID()}</MessageId></PublishResult>` +
            `<ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></PublishResponse>`;
          return { response: { statusCode: 200, headers: { 'content-type': 'text/xml' }, body: new TextEncoder().encode(xml) } };
        },
      } as unknown as SNSClient['config']['requestHandler'],
    }),
  );
}
