/** The CDK app: `npx cdk deploy` deploys the stack `Sluice`. */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { SluiceStack } from '../lib/sluice-stack.ts';

const app = new App();
new SluiceStack(app, 'Sluice', {
  description: 'sluice: flood-proof webhooks and event streams',
  config: (app.node.tryGetContext('sluice') as Record<string, unknown> | undefined) ?? {},
});
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
