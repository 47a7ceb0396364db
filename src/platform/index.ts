/**
 * The platform the core runs on. This module is the Node one; the browser bundle replaces it with
 * ./browser-index.ts (see scripts/build-browser.mjs), so the core never names a host.
 */
export { nodePlatform as platform } from './node.js';
export type { Platform, AssetName, PoolWorker } from './types.js';
