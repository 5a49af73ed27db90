import { createRoute, type RouteConfig, type RouteHandler } from '@hono/zod-openapi'
import type { ApiApp, ApiEnv } from './app.js'

/**
 * Declares a route: its config (schemas of the input and the answers, which the OpenAPI
 * document is generated from and the input is validated by) and its handler. The handler's
 * input is typed from the schemas; its answer is checked against the document by the tests
 * (`test/integration/openapi.test.ts`), not by the compiler.
 */
export function openapi<R extends RouteConfig>(
  app: ApiApp,
  config: R,
  handler: (c: Parameters<RouteHandler<R, ApiEnv>>[0]) => Response | Promise<Response>,
): void {
  app.openapi(createRoute(config), handler as never)
}
