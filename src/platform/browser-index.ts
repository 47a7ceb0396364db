/** The platform module as the browser bundle sees it (it replaces ./index.ts there). */
export { browserPlatform as platform } from './browser.js';
export type { Platform, AssetName, PoolWorker } from './types.js';
