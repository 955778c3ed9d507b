// Starts Swagger UI on /api/docs/ (templates/api/docs.html) from the page's data attributes. What
// drf-spectacular would write inline, in a file, so the Content-Security-Policy forbids inline script.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  const config = root.dataset;
  window.ui = SwaggerUIBundle({
    url: config.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // "Try it out" with the browser's session: requests that change something carry the CSRF token.
    requestInterceptor: (request) => {
      if (!["GET", "HEAD", undefined].includes(request.method) && request.credentials === "same-origin") {
        request.headers[config.csrfHeader] = config.csrfToken;
      }
      return request;
    },
    ...JSON.parse(config.settings || "{}"),
  });
})();
