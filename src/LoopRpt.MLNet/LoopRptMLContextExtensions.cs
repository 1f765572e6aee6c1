using LoopRpt.MLNet;

// In namespace Microsoft.ML, as ML.NET's own add-on packages do (LightGbm, FastTree, TorchSharp extensions): a user who
// already has `using Microsoft.ML;` finds mlContext.LoopRpt() without importing another namespace.
namespace Microsoft.ML;

/// <summary>Entry point of the LoopRpt ML.NET components.</summary>
public static class LoopRptMLContextExtensions
{
    /// <summary>The LoopRpt catalog of <paramref name="mlContext"/>: tokenizer, looped-LM trainer, scorer, evaluation.</summary>
    public static LoopRptCatalog LoopRpt(this MLContext mlContext) => new(mlContext);
}
