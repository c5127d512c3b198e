package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// bashCompletionFallback defines, when the bash-completion package has not
// (it is not installed, or not loaded by the shell), the one function of
// that package the script cobra writes needs: _get_comp_words_by_ref,
// reduced to what the script asks of it (the current and previous words,
// all words and the index of the current one; no re-splitting at = or :).
const bashCompletionFallback = `# recon's completion works without the bash-completion package: when that
# package is not loaded, this minimal _get_comp_words_by_ref stands in.
if ! declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
_get_comp_words_by_ref()
{
    while [[ $# -gt 0 && $1 == -* ]]; do
        case $1 in
            -n|-i|-c) shift 2 ;;
            *) shift ;;
        esac
    done
    local name
    for name in "$@"; do
        case $name in
            cur) cur=${COMP_WORDS[COMP_CWORD]} ;;
            prev) prev=${COMP_WORDS[COMP_CWORD-1]} ;;
            words) words=("${COMP_WORDS[@]}") ;;
            cword) cword=$COMP_CWORD ;;
        esac
    done
}
fi

`

// completeBashWithoutPackage makes `recon completion bash` write a script
// that works with or without the bash-completion package.
func completeBashWithoutPackage(root *cobra.Command) {
	comp, _, err := root.Find([]string{"completion", "bash"})
	if err != nil || comp.Name() != "bash" {
		return
	}
	comp.Long = fmt.Sprintf(`Generate the autocompletion script for bash. It works with or without the
bash-completion package (without it, words are not split at '=' or ':').

To load completions in your current shell session:

	source <(%[1]s completion bash)

To load completions for every new session, execute once:

	%[1]s completion bash > /etc/bash_completion.d/%[1]s   # Linux, as root
	%[1]s completion bash > ~/.%[1]s-completion.bash && echo 'source ~/.%[1]s-completion.bash' >> ~/.bashrc

You will need to start a new shell for this setup to take effect.`, root.Name())
	comp.RunE = func(cmd *cobra.Command, args []string) error {
		noDesc, _ := cmd.Flags().GetBool("no-descriptions")
		return writeBashCompletion(cmd.OutOrStdout(), root, !noDesc)
	}
	comp.Run = nil
}

func writeBashCompletion(w io.Writer, root *cobra.Command, desc bool) error {
	if _, err := io.WriteString(w, bashCompletionFallback); err != nil {
		return err
	}
	return root.GenBashCompletionV2(w, desc)
}
