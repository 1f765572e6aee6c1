using System.CommandLine;
using System.Diagnostics;
using LoopRpt.Cli.Input;
using LoopRpt.Tokenization;

namespace LoopRpt.Cli.Commands;

/// <summary><c>looprpt tokenizer</c>: learns a byte-level BPE vocabulary and writes it as a LoopRpt tokenizer file.</summary>
internal static class TokenizerCommand
{
    public static Command Create()
    {
        var input = CommonOptions.Input();
        var column = CommonOptions.Column();
        var docs = CommonOptions.Documents();
        var vocab = new Option<int>("--vocab-size") { Description = "Vocabulary size (special tokens and the 256 bytes included); the default is the one `train` and `experiment` learn.", DefaultValueFactory = _ => ModelTraining.DefaultVocabulary };
        var minFreq = new Option<int>("--min-frequency") { Description = "Pairs seen fewer times are not merged.", DefaultValueFactory = _ => ByteLevelBpeTrainerOptions.Defaults.MinFrequency };
        var output = new Option<string>("--out", "-o") { Description = "Tokenizer file to write (JSON; give it to `looprpt train --tokenizer`).", Required = true };
        var cmd = new Command("tokenizer", "Train a byte-level BPE tokenizer on a corpus.") { input, column, docs, vocab, minFreq, output };
        cmd.SetAction(pr => Run(pr.GetRequiredValue(input), pr.GetValue(column), pr.GetValue(docs), pr.GetValue(vocab), pr.GetValue(minFreq), pr.GetRequiredValue(output)));
        return cmd;
    }

    private static int Run(string[] inputs, string? column, DocumentSplit split, int vocab, int minFreq, string output)
    {
        var ctx = CliContext.Require();
        CommonOptions.AtLeast(vocab, 257, "--vocab-size");
        CommonOptions.AtLeast(minFreq, 1, "--min-frequency");
        OutputPaths.File(output, "--out");
        var docs = Corpus.Read(inputs, split, column);
        var clock = Stopwatch.StartNew();
        var tokenizer = LoopRptTokenizer.Train(docs, new ByteLevelBpeTrainerOptions { VocabularySize = vocab, MinFrequency = minFreq }, ctx.CancellationToken);
        CommonOptions.EnsureParent(output);
        File.WriteAllText(output, tokenizer.Spec.ToJson());
        long tokens = docs.Sum(d => (long)tokenizer.Encode(d).Length);
        long chars = docs.Sum(d => (long)d.Length);
        ctx.Output.WriteLine($"tokenizer vocab_size={tokenizer.VocabularySize} documents={docs.Count} chars={chars} tokens={tokens} chars_per_token={(double)chars / Math.Max(1, tokens):F2} seconds={clock.Elapsed.TotalSeconds:F1} out={output}");
        return ExitCodes.Success;
    }
}
