namespace LoopRpt.MLNet;

/// <summary>Options of the LoopRpt featurizer (<see cref="LoopRptCatalog.Featurize(LoopRptFeaturizerOptions)"/>).</summary>
public sealed class LoopRptFeaturizerOptions
{
    /// <summary>Defaults, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Token-id vector column read.</summary>
        public const string TokenColumnName = "Tokens";

        /// <summary>Feature vector column written.</summary>
        public const string OutputColumnName = "Features";

        /// <summary>Exit threshold q: each token stops looping once its exit CDF reaches q.</summary>
        public const double ExitThreshold = 0.5;

        /// <summary>Rows per forward pass.</summary>
        public const int BatchSize = 16;

        /// <summary>Tokens read per row at most (longer rows keep their start).</summary>
        public const int ContextLength = 512;
    }

    /// <summary>Token-id vector column (Vector&lt;Int32&gt; or Vector&lt;Int64&gt;). Default "Tokens".</summary>
    public string TokenColumnName { get; set; } = Defaults.TokenColumnName;

    /// <summary>Feature column to create (Vector&lt;Single&gt; of known length). Default "Features".</summary>
    public string OutputColumnName { get; set; } = Defaults.OutputColumnName;

    /// <summary>Exit threshold q in [0, 1]; 1 means full depth. Default 0.5.</summary>
    public double ExitThreshold { get; set; } = Defaults.ExitThreshold;

    /// <summary>Rows per forward pass (at least 1). Default 16.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>Tokens read per row at most (at least 2; also capped by max_position_embeddings). Default 512.</summary>
    public int ContextLength { get; set; } = Defaults.ContextLength;

    /// <summary>Device: "cpu", "cuda", "cuda:N"; null means the MLContext's GPU settings.</summary>
    public string? Device { get; set; }

    /// <summary>Fall back to the CPU when CUDA is absent; null means <c>MLContext.FallbackToCpu</c>.</summary>
    public bool? FallbackToCpu { get; set; }

    /// <summary>How <c>ml.Model.Save</c> stores the weights. Default <see cref="ModelStorage.Auto"/>.</summary>
    public ModelStorage Storage { get; set; } = ModelStorage.Auto;

    /// <summary>The LoopRpt model directory to load. Required for the loading estimator.</summary>
    public string? ModelDirectory { get; set; }

    internal LoopRptFeaturizerOptions Clone() => (LoopRptFeaturizerOptions)MemberwiseClone();

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(TokenColumnName)) throw new ArgumentException("TokenColumnName must be given.", nameof(TokenColumnName));
        if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must be given.", nameof(OutputColumnName));
        if (!(ExitThreshold is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(ExitThreshold), ExitThreshold, "ExitThreshold must lie in [0, 1].");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
        if (ContextLength < 2) throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength, "ContextLength must be at least 2.");
    }

    internal AdaptiveExitScoringTransformer.Options ToScorerOptions() => new()
    {
        TokenColumnName = TokenColumnName, ExitMode = Model.ExitMode.Q(ExitThreshold), BatchSize = BatchSize, ContextLength = ContextLength,
        Device = Device, FallbackToCpu = FallbackToCpu, Storage = Storage, ModelDirectory = ModelDirectory,
    };
}
