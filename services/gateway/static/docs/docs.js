// The API documentation page: fetches /openapi.json and renders its operations (grouped by
// tag), their parameters, request bodies and responses, and the schemas they refer to.
// Plain DOM and textContent only: nothing from the document is parsed as HTML.

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

// Text with `code` spans, as the document writes them.
function prose(text, tag = "span") {
  const node = el(tag);
  String(text || "")
    .split("`")
    .forEach((part, i) => node.append(i % 2 ? el("code", { text: part }) : document.createTextNode(part)));
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

function anchorOf(method, path) {
  return `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
}

// A short, readable label for a schema: links for references, "array of X", unions with "|".
function typeLabel(schema) {
  if (!schema || Object.keys(schema).length === 0) return el("span", { class: "mono", text: "any" });
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { href: `#schema-${name}`, class: "mono", text: name });
  }
  const span = el("span", { class: "mono" });
  const union = schema.anyOf || schema.oneOf || schema.allOf;
  if (union) {
    const joiner = schema.allOf ? " & " : " | ";
    union.forEach((part, i) => {
      if (i) span.append(joiner);
      span.append(typeLabel(part));
    });
    return span;
  }
  if (schema.enum) return el("span", { class: "mono", text: schema.enum.map((v) => JSON.stringify(v)).join(" | ") });
  if (schema.const !== undefined) return el("span", { class: "mono", text: JSON.stringify(schema.const) });
  if (schema.type === "array") {
    span.append("array of ", typeLabel(schema.items));
    return span;
  }
  if (schema.type === "object" && schema.additionalProperties) {
    span.append("object of ", typeLabel(schema.additionalProperties));
    return span;
  }
  span.textContent = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
  return span;
}

function constraints(schema) {
  const keys = ["minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength", "pattern", "default"];
  return keys
    .filter((key) => schema && schema[key] !== undefined)
    .map((key) => `${key}: ${JSON.stringify(schema[key])}`)
    .join(", ");
}

function table(headings, rows) {
  const head = el("tr", {}, ...headings.map((h) => el("th", { scope: "col", text: h })));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function propertiesTable(schema) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([name, prop]) => [
    el("code", { text: name }),
    typeLabel(prop),
    required.has(name) ? "yes" : "no",
    prose([prop.description, constraints(prop)].filter(Boolean).join(" — ")),
  ]);
  return rows.length ? table(["Field", "Type", "Required", "Notes"], rows) : el("p", { class: "muted", text: "No fields." });
}

function contentList(content) {
  const list = el("div");
  for (const [mediaType, media] of Object.entries(content || {})) {
    list.append(el("div", {}, el("code", { text: mediaType }), ": ", typeLabel(media.schema)));
  }
  return list;
}

function securityNote(security) {
  if (!security || security.length === 0) return "open: no credentials";
  if (security.some((entry) => Object.keys(entry).length === 0)) return "credentials optional";
  return "needs a token (Bearer or session cookie)";
}

function renderOperation(path, method, operation) {
  const summary = el(
    "summary",
    {},
    el("span", { class: `method ${method}`, text: method }),
    el("code", { text: path }),
    " — ",
    prose(operation.summary),
    el("span", { class: "lock", text: securityNote(operation.security) }),
  );
  const body = el("div", { class: "body" });
  if (operation.description) body.append(prose(operation.description, "p"));
  const params = operation.parameters || [];
  if (params.length) {
    body.append(el("h3", { text: "Parameters" }));
    body.append(
      table(
        ["Name", "In", "Type", "Required", "Notes"],
        params.map((p) => [
          el("code", { text: p.name }),
          p.in,
          typeLabel(p.schema),
          p.required ? "yes" : "no",
          prose([p.description, constraints(p.schema)].filter(Boolean).join(" — ")),
        ]),
      ),
    );
  }
  if (operation.requestBody) {
    body.append(el("h3", { text: "Request body" }), contentList(operation.requestBody.content));
  }
  body.append(el("h3", { text: "Responses" }));
  body.append(
    table(
      ["Status", "Meaning", "Body"],
      Object.entries(operation.responses || {}).map(([status, response]) => [
        el("strong", { text: status }),
        prose(response.description),
        contentList(response.content),
      ]),
    ),
  );
  return el("details", { id: anchorOf(method, path) }, summary, body);
}

function renderOperations(doc) {
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, item[method]]);
    }
  }
  const toc = document.getElementById("toc");
  const operations = document.getElementById("operations");
  for (const [tag, ops] of byTag) {
    const links = ops.map(([path, method, op]) =>
      el("li", {}, el("a", { href: `#${anchorOf(method, path)}`, text: `${method.toUpperCase()} ${path}` }), " — ", prose(op.summary)),
    );
    toc.append(el("div", { class: "toc-tag" }, el("strong", { text: tag }), el("ul", {}, ...links)));
    operations.append(el("h2", { text: tag }), ...ops.map(([path, method, op]) => renderOperation(path, method, op)));
  }
}

function renderSchemas(doc) {
  const section = document.getElementById("schemas");
  const schemas = (doc.components && doc.components.schemas) || {};
  for (const [name, schema] of Object.entries(schemas)) {
    const body = el("div", { class: "body" });
    if (schema.description) body.append(prose(schema.description, "p"));
    if (schema.properties) body.append(propertiesTable(schema));
    else body.append(el("p", {}, typeLabel(schema)));
    section.append(el("details", { id: `schema-${name}` }, el("summary", {}, el("code", { text: name })), body));
  }
  section.hidden = false;
}

// Following a link to a schema or operation opens it.
function openTarget() {
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") {
    target.open = true;
    target.scrollIntoView();
  }
}

async function main() {
  const status = document.getElementById("status");
  try {
    const reply = await fetch("/openapi.json", { credentials: "same-origin" });
    if (!reply.ok) throw new Error(`/openapi.json answered ${reply.status}`);
    const doc = await reply.json();
    document.title = `${doc.info.title} — API`;
    document.getElementById("title").textContent = `${doc.info.title} (OpenAPI ${doc.openapi})`;
    document.getElementById("description").replaceChildren(prose(doc.info.description));
    renderOperations(doc);
    renderSchemas(doc);
    status.textContent = "";
    window.addEventListener("hashchange", openTarget);
    openTarget();
  } catch (err) {
    status.className = "error";
    status.textContent = `Could not load the API document: ${err.message}`;
  }
}

main();
