// The designer's server routes. A token in the page's fragment (#token=...) is kept for the
// session and sent as a bearer token: the management port needs it, the URL never carries it.
const fragment = new URLSearchParams(window.location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("interlace-token", fragment.get("token"));
  history.replaceState(null, "", window.location.pathname);
}

export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "request failed");
    this.problem = problem;
  }
}

async function call(method, path, body) {
  const headers = { "x-interlace-designer": "1" };
  const token = sessionStorage.getItem("interlace-token");
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const answer = await fetch(`api/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await answer.json().catch(() => ({ title: `HTTP ${answer.status}` }));
  if (!answer.ok) throw new ApiError({ status: answer.status, ...data });
  return data;
}

export const api = {
  registry: () => call("GET", "registry"),
  files: () => call("GET", "files"),
  create: (name) => call("POST", "files", { name }),
  open: (name) => call("GET", `files/${encodeURIComponent(name)}`),
  preview: (name, base, edits) => call("POST", `files/${encodeURIComponent(name)}/preview`, { base, edits }),
  save: (name, base, edits) => call("PUT", `files/${encodeURIComponent(name)}`, { base, edits }),
  tryIt: (body) => call("POST", "try", body),
  addCase: (suite, testCase) => call("POST", `tests/${encodeURIComponent(suite)}/cases`, { case: testCase }),
};
