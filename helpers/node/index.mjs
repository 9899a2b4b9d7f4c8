// ESM entry of the handoff helper: the same functions as index.js.
import handoff from './index.js';

export const { serve, listenFds, listenTarget } = handoff;
export default handoff;
