namespace LoopRpt.MLNet;

/// <summary>Where a fitted scorer's weights live when the ML.NET model is saved.</summary>
public enum ModelStorage
{
    /// <summary>Embedded when the weights are at most <see cref="AdaptiveExitScoringTransformer.Options.Defaults.MaxEmbeddedBytes"/>, else the model directory (which must then be known).</summary>
    Auto,
    /// <summary>The weights travel inside the ML.NET zip (base64 safetensors in a ValueMapping): one self-contained file.</summary>
    Embedded,
    /// <summary>The zip references a LoopRpt model directory by absolute path and fingerprint; the directory must stay in place.</summary>
    Directory,
}
