// Model Builder-style use of LoopRpt (issue 8): train a tiny looped LM on a generated corpus through the generated-code
// shape (LoopedLmModel.training.cs), save model.zip, then score a few texts through LoopedLmModel.Predict
// (LoopedLmModel.consumption.cs). Usage:
//   dotnet run -c Release --project examples/ModelBuilderStyle -- [outputFolder]
// outputFolder defaults to a folder under the system temp directory; it receives corpus.tsv and model.zip.
using System.Diagnostics;
using System.Globalization;

namespace ModelBuilderStyle;

/// <summary>Entry point of the example.</summary>
public static class Program
{
    /// <summary>Trains, saves and predicts; returns 0 on success.</summary>
    /// <param name="args">Optional output folder.</param>
    /// <returns>The process exit code.</returns>
    public static int Main(string[] args)
    {
        if (args.Length > 1 || args is ["-h" or "--help"])
        {
            Console.Error.WriteLine("usage: ModelBuilderStyle [outputFolder]");
            return 2;
        }
        var output = Path.GetFullPath(args.Length == 1 ? args[0] : Path.Combine(Path.GetTempPath(), "looprpt-modelbuilder"));
        Directory.CreateDirectory(output);
        var corpus = SampleCorpus.WriteTsv(Path.Combine(output, "corpus.tsv"), count: 400, seed: 1);
        var modelPath = Path.Combine(output, "model.zip");

        var clock = Stopwatch.StartNew();
        LoopedLmModel.Train(modelPath, corpus);
        Console.WriteLine($"trained preset '{LoopedLmModel.Preset}' ({LoopedLmModel.PretrainSteps} + {LoopedLmModel.GateSteps} steps) on {corpus} in {clock.Elapsed.TotalSeconds:F1} s");
        Console.WriteLine($"saved {modelPath} ({new FileInfo(modelPath).Length / 1024.0:F0} KiB)");
        Console.WriteLine();

        LoopedLmModel.MLNetModelPath = modelPath;
        string[] texts =
        [
            "The cat sat on the mat.",                 // in-distribution
            "A dog walked past a quiet garden.",       // in-distribution
            "The river jumped over my friend.",        // same words, unusual order
            "Quantum tunnelling of electrons.",        // out of distribution
        ];
        Console.WriteLine("| text | tokens | log-likelihood | perplexity | mean exit step | compute ratio | exit steps |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---|");
        foreach (var text in texts)
        {
            var p = LoopedLmModel.Predict(new LoopedLmModel.ModelInput { Text = text });
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {text} | {p.TokenCount} | {p.LogLikelihood:F2} | {p.Perplexity:F2} | {p.MeanExitStep:F2} | {p.ComputeFraction:F2} | {string.Join(' ', p.ExitSteps)} |"));
        }
        return 0;
    }
}
