using System.CommandLine;
using System.Globalization;
using LoopRpt.Evaluation;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// The options <c>evaluate</c> and <c>pareto</c> share — <c>--q</c>, <c>--buckets</c>, <c>--pass</c>, <c>--seq-len</c>,
/// <c>--batch-size</c>, <c>--max-tokens</c> — read into the evaluation's own options.
/// </summary>
internal sealed class EvaluationOptionSet(IReadOnlyList<double> defaultQ)
{
    private readonly Option<string> _q = CommonOptions.Thresholds(string.Join(",", defaultQ.Select(v => v.ToString(CultureInfo.InvariantCulture))));
    private readonly Option<string> _buckets = CommonOptions.Buckets();
    private readonly Option<string> _pass = CommonOptions.Pass();
    private readonly Option<int> _sequenceLength = CommonOptions.SequenceLength(128);
    private readonly Option<int> _batchSize = CommonOptions.BatchSize(8);
    private readonly Option<long> _maxTokens = new("--max-tokens") { Description = "Evaluate at most this many tokens (0: all).", DefaultValueFactory = _ => 0 };

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { _q, _buckets, _pass, _sequenceLength, _batchSize, _maxTokens }) command.Options.Add(option);
    }

    /// <summary>The values, validated: a bad one is a usage error naming its option.</summary>
    public (LoopEvaluationOptions Options, int SequenceLength, int BatchSize, long MaxTokens) Read(ParseResult pr)
    {
        var options = new LoopEvaluationOptions
        {
            QValues = CommonOptions.ParseThresholds(pr.GetValue(_q)!),
            Buckets = CommonOptions.ParseBuckets(pr.GetValue(_buckets)!),
            Pass = CommonOptions.ParsePass(pr.GetValue(_pass)!),
        };
        int s = CommonOptions.AtLeast(pr.GetValue(_sequenceLength), 1, "--seq-len");
        int b = CommonOptions.AtLeast(pr.GetValue(_batchSize), 1, "--batch-size");
        long max = pr.GetValue(_maxTokens) is var m and >= 0 ? m : throw CliException.Usage("--max-tokens must be 0 or more.");
        return (options, s, b, max);
    }
}
