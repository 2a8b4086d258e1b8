/** This client's version, sent as `Herald-Client-Version` with every stream request (fetch transport). */
export const CLIENT_VERSION = "0.1.0";
