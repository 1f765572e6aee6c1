namespace LoopRpt.Server;

/// <summary>Options of the OpenAI-compatible server (<c>looprpt serve</c>, <see cref="LoopRptServer"/>).</summary>
public sealed class LoopRptServerOptions
{
    /// <summary>Defaults, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Where Kestrel listens.</summary>
        public const string Urls = "http://127.0.0.1:8080";

        /// <summary>Largest request body in bytes (1 MiB).</summary>
        public const long MaxRequestBodyBytes = 1 << 20;

        /// <summary>The environment variable <see cref="ApiKey"/> is read from when it is unset.</summary>
        public const string ApiKeyEnvironmentVariable = "LOOPRPT_API_KEY";

        /// <summary>Requests served at once; more get HTTP 429.</summary>
        public const int MaxConcurrentRequests = 64;

        /// <summary>Seconds a request may take before it is cancelled (HTTP 408).</summary>
        public const double RequestTimeoutSeconds = 120;

        /// <summary>Texts per embeddings or scoring request at most.</summary>
        public const int MaxInputs = 256;
    }

    /// <summary>Where Kestrel listens (semicolon-separated URLs; port 0 picks a free port). Default http://127.0.0.1:8080.</summary>
    public string Urls { get; set; } = Defaults.Urls;

    /// <summary>Largest request body in bytes; larger requests get HTTP 413. Default 1 MiB.</summary>
    public long MaxRequestBodyBytes { get; set; } = Defaults.MaxRequestBodyBytes;

    /// <summary>
    /// Largest <c>max_tokens</c> (or <c>max_completion_tokens</c>) a request may ask for; larger asks get HTTP 400. A
    /// request that gives none generates up to the room left in the model's context (context − prompt tokens), at most
    /// this. Default null: no limit but the model's context (a prompt and its reply beyond it get HTTP 400
    /// <c>context_length_exceeded</c>).
    /// </summary>
    public int? MaxTokens { get; set; }

    /// <summary>Requests in flight at most; more get HTTP 429 at once (no queueing at the HTTP layer). Default 64.</summary>
    public int MaxConcurrentRequests { get; set; } = Defaults.MaxConcurrentRequests;

    /// <summary>Seconds before a request is cancelled with HTTP 408 (a stream that already started just ends). Default 120.</summary>
    public double RequestTimeoutSeconds { get; set; } = Defaults.RequestTimeoutSeconds;

    /// <summary>Texts per embeddings or scoring request at most. Default 256.</summary>
    public int MaxInputs { get; set; } = Defaults.MaxInputs;

    /// <summary>
    /// OTLP endpoint (e.g. http://localhost:4317) to export the <c>LoopRpt.Inference</c> and <c>LoopRpt.Server</c> meters
    /// to; null exports only where <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set.
    /// </summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>
    /// The key every <c>/v1</c> route requires as <c>Authorization: Bearer &lt;key&gt;</c> (HTTP 401
    /// <c>invalid_api_key</c> otherwise; <c>/healthz</c> stays open). Null (default): the environment variable
    /// <c>LOOPRPT_API_KEY</c> (<see cref="Defaults.ApiKeyEnvironmentVariable"/>) when it is set and not blank, else no key.
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary><see cref="ApiKey"/>, else the environment variable's; null when neither is set.</summary>
    internal string? ResolvedApiKey()
        => ApiKey ?? (Environment.GetEnvironmentVariable(Defaults.ApiKeyEnvironmentVariable) is { } key && !string.IsNullOrWhiteSpace(key) ? key : null);

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Urls)) throw new ArgumentException("Urls must name at least one URL.", nameof(Urls));
        if (MaxRequestBodyBytes < 1024) throw new ArgumentOutOfRangeException(nameof(MaxRequestBodyBytes), MaxRequestBodyBytes, "MaxRequestBodyBytes must be at least 1024.");
        if (ApiKey is not null && string.IsNullOrWhiteSpace(ApiKey)) throw new ArgumentException("ApiKey must not be blank; leave it null for no key.", nameof(ApiKey));
        if (MaxTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxTokens), MaxTokens, "MaxTokens must be at least 1.");
        if (MaxConcurrentRequests < 1) throw new ArgumentOutOfRangeException(nameof(MaxConcurrentRequests), MaxConcurrentRequests, "MaxConcurrentRequests must be at least 1.");
        if (!(RequestTimeoutSeconds > 0)) throw new ArgumentOutOfRangeException(nameof(RequestTimeoutSeconds), RequestTimeoutSeconds, "RequestTimeoutSeconds must be positive.");
        if (MaxInputs < 1) throw new ArgumentOutOfRangeException(nameof(MaxInputs), MaxInputs, "MaxInputs must be at least 1.");
    }
}
